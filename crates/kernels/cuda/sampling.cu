/* Next-token selection from f32 logits: argmax, and temperature -> top-k -> top-p sampling.
 *
 * Only ids [0, vocab_limit) are candidates (the lm_head may have padding rows past the tokenizer). One
 * block of 512 threads per row; everything is deterministic (fixed reduction trees, integer histograms),
 * so a row gives the same id in any batch.
 *
 * latentmas_argmax: per-thread best over a contiguous segment, then a (value, id) reduction; ties go to
 * the lowest id (torch.argmax). NaN logits are not supported.
 *
 * latentmas_sample, for row r with u = uniform[r] in [0, 1):
 *   1. temperature <= 0: argmax (greedy).
 *   2. m = max logit. top-k (0 < k < vocab_limit): the k-th largest logit T_k by a 4-pass radix select on
 *      order-preserving u32 keys (8 bits per pass, a 256-bin shared histogram); kept: logit >= T_k (ties
 *      with the k-th value are kept, as transformers' TopKLogitsWarper does).
 *   3. weights w = 2^((logit - m) * log2(e) / temperature) of kept ids; Z = sum.
 *   4. top-p (0 < p < 1): the threshold tau = the largest key K with mass(key >= K) >= p * Z, found by a
 *      32-step bitwise binary search (each step one block reduction); kept: key >= tau. This keeps exactly
 *      the ids whose strictly-more-probable mass is < p (ties kept together) = transformers' TopPLogitsWarper
 *      up to ties.
 *   5. inverse CDF in id order: Z' = sum of kept w over each thread's contiguous segment; an exclusive scan
 *      over threads finds the segment holding u * Z', and its thread walks it to the first id whose
 *      running sum exceeds the target (rounding at the very end falls back to the segment's last kept id).
 * Passes 2-4 read the row strided (coalesced); passes 1 and 5 read contiguous segments.
 * Cost: ~40 block reductions and ~40 reads of the row (from L2) per row; compacting the top-k survivors
 * first would cut the top-p search to a few hundred elements (future work).
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu sample`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: written out in tests/kernels_emu.rs (argmax_twin, sample_twin), f64.
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace sample_impl {

constexpr int kThreads = LMAS_SAMPLE_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kNone = 0xffffffffu;

/* Order-preserving map f32 -> u32 (for non-NaN): a < b <=> key(a) < key(b). */
__device__ __forceinline__ unsigned key_of(float f) {
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Reduces (value, id) pairs to the max value, lowest id on ties, over the block. `vals`/`ids`: shared [32]. */
__device__ __forceinline__ void block_argmax(float& best, unsigned& bi, float* vals, unsigned* ids) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(LMAS_FULL_MASK, best, o);
        const unsigned oi = __shfl_xor_sync(LMAS_FULL_MASK, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        vals[warp] = best;
        ids[warp] = bi;
    }
    __syncthreads();
    best = lane < (unsigned)kWarps ? vals[lane] : -INFINITY;
    bi = lane < (unsigned)kWarps ? ids[lane] : kNone;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(LMAS_FULL_MASK, best, o);
        const unsigned oi = __shfl_xor_sync(LMAS_FULL_MASK, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    __syncthreads();
}

/* Argmax of x[0, V) over the block; every thread gets the id. */
__device__ __forceinline__ unsigned row_argmax(const float* x, unsigned V, float* vals, unsigned* ids) {
    const unsigned seg = (V + kThreads - 1) / kThreads;
    const unsigned b = threadIdx.x * seg, e = b + seg < V ? b + seg : V;
    float best = -INFINITY;
    unsigned bi = kNone;
    for (unsigned i = b; i < e; i++) {
        const float v = x[i];
        if (bi == kNone || v > best) {
            best = v;
            bi = i;
        }
    }
    block_argmax(best, bi, vals, ids);
    return bi;
}

}  // namespace sample_impl

extern "C" __global__ void __launch_bounds__(LMAS_SAMPLE_THREADS) latentmas_argmax(const LmasArgmaxParams p) {
    using namespace sample_impl;
    __shared__ float vals[32];
    __shared__ unsigned ids[32];
    const float* x = p.logits + (size_t)blockIdx.x * p.stride;
    const unsigned id = row_argmax(x, p.vocab_limit, vals, ids);
    if (threadIdx.x == 0) p.out[blockIdx.x] = id;
}

extern "C" __global__ void __launch_bounds__(LMAS_SAMPLE_THREADS) latentmas_sample(const LmasSampleParams p) {
    using namespace sample_impl;
    __shared__ float vals[32];
    __shared__ unsigned ids[32];
    __shared__ float red[32];
    __shared__ unsigned hist[256];
    __shared__ unsigned sel[2];
    const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const unsigned V = p.vocab_limit;
    const float* x = p.logits + (size_t)blockIdx.x * p.stride;

    // 1. greedy
    if (!(p.temperature > 0.0f)) {
        const unsigned id = row_argmax(x, V, vals, ids);
        if (tid == 0) p.out[blockIdx.x] = id;
        return;  // whole block
    }

    // 2. max and the top-k threshold key
    float mx = -INFINITY;
    for (unsigned i = tid; i < V; i += kThreads) mx = fmaxf(mx, x[i]);
    mx = lmas::block_max<kWarps>(mx, red);
    unsigned kmin = 0;  // keep keys >= kmin
    if (p.top_k > 0 && p.top_k < V) {
        unsigned prefix = 0, prefix_mask = 0, remaining = p.top_k;
        for (int pass = 0; pass < 4; pass++) {
            const int shift = 24 - 8 * pass;
            for (unsigned b = tid; b < 256; b += kThreads) hist[b] = 0;
            __syncthreads();
            for (unsigned i = tid; i < V; i += kThreads) {
                const unsigned k = key_of(x[i]);
                if ((k & prefix_mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned cum = 0;
                for (int b = 255; b >= 0; b--) {
                    if (cum + hist[b] >= remaining) {
                        sel[0] = prefix | ((unsigned)b << shift);
                        sel[1] = remaining - cum;
                        break;
                    }
                    cum += hist[b];
                }
            }
            __syncthreads();
            prefix = sel[0];
            remaining = sel[1];
            prefix_mask |= 0xffu << shift;
        }
        kmin = prefix;
    }

    // 3. weights of the kept ids and their total
    const float wscale = kLog2e / p.temperature;
    float z = 0.0f;
    for (unsigned i = tid; i < V; i += kThreads) {
        const float v = x[i];
        if (key_of(v) >= kmin) z += exp2f((v - mx) * wscale);
    }
    z = lmas::block_sum<kWarps>(z, red);

    // 4. top-p threshold
    unsigned keep = kmin;
    if (p.top_p < 1.0f) {
        const float target = p.top_p * z;
        unsigned ans = 0;
        for (int bit = 31; bit >= 0; bit--) {
            const unsigned cand = ans | (1u << bit);
            const unsigned lo = cand > kmin ? cand : kmin;
            float mass = 0.0f;
            for (unsigned i = tid; i < V; i += kThreads) {
                const float v = x[i];
                if (key_of(v) >= lo) mass += exp2f((v - mx) * wscale);
            }
            mass = lmas::block_sum<kWarps>(mass, red);
            if (mass >= target) ans = cand;
        }
        keep = ans > kmin ? ans : kmin;
    }

    // 5. inverse CDF in id order over contiguous segments
    const unsigned seg = (V + kThreads - 1) / kThreads;
    const unsigned b = tid * seg, e = b + seg < V ? b + seg : V;
    float mine = 0.0f;
    for (unsigned i = b; i < e; i++) {
        const float v = x[i];
        if (key_of(v) >= keep) mine += exp2f((v - mx) * wscale);
    }
    // exclusive scan of `mine` over threads: warp inclusive scan, then the warps' totals
    float incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float up = __shfl_up_sync(LMAS_FULL_MASK, incl, o);
        if ((int)lane >= o) incl += up;
    }
    if (lane == 31) vals[warp] = incl;
    __syncthreads();
    float before = 0.0f, total = 0.0f;
    for (int w = 0; w < kWarps; w++) {
        const float t = vals[w];
        if (w < (int)warp) before += t;
        total += t;
    }
    before += incl - mine;
    __syncthreads();
    const float target = p.uniform[blockIdx.x] * total;
    // the owner: the last thread with a non-empty segment that starts at or below the target
    const float cand = (mine > 0.0f && before <= target) ? (float)tid : -1.0f;
    const float owner = lmas::block_max<kWarps>(cand, red);
    if ((float)tid == owner) {
        const float rel = target - before;
        float run = 0.0f;
        unsigned pick = kNone, last = kNone;
        for (unsigned i = b; i < e; i++) {
            const float v = x[i];
            if (key_of(v) < keep) continue;
            run += exp2f((v - mx) * wscale);
            last = i;
            if (run > rel) {
                pick = i;
                break;
            }
        }
        p.out[blockIdx.x] = pick != kNone ? pick : last;
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_argmax(const LmasArgmaxParams* p, LmasPlan* plan) {
    if (p->vocab_limit == 0 || p->vocab_limit > p->stride)
        LMAS_PLAN_FAIL(plan, "latentmas_argmax: vocab_limit %u must be in [1, stride = %u]", p->vocab_limit, p->stride);
    if (p->n_rows == 0) return;
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_argmax", {p->n_rows, 1, 1}, {LMAS_SAMPLE_THREADS, 1, 1}, 0, 0};
}

extern "C" void lmas_plan_sample(const LmasSampleParams* p, LmasPlan* plan) {
    if (p->vocab_limit == 0 || p->vocab_limit > p->stride)
        LMAS_PLAN_FAIL(plan, "latentmas_sample: vocab_limit %u must be in [1, stride = %u]", p->vocab_limit, p->stride);
    if (!(p->top_p > 0.0f))
        LMAS_PLAN_FAIL(plan, "latentmas_sample: top_p %g must be > 0 (1 disables it)", (double)p->top_p);
    if (p->temperature != p->temperature) LMAS_PLAN_FAIL(plan, "latentmas_sample: temperature is NaN");
    if (p->n_rows == 0) return;
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_sample", {p->n_rows, 1, 1}, {LMAS_SAMPLE_THREADS, 1, 1}, 0, 0};
}

LMAS_EMU_ENTRY(argmax, LmasArgmaxParams, LMAS_KERNEL(latentmas_argmax))
LMAS_EMU_ENTRY(sample, LmasSampleParams, LMAS_KERNEL(latentmas_sample))
