/* Causal GQA attention over the shared KV buffer: prefill (any number of new tokens per row) and decode
 * (one new token per row, split-KV with a log-sum-exp merge). bf16 in and out, f32 softmax and accumulation.
 *
 * Semantics (src/backend/cpu/attention.rs): the j-th new token of row r, q head h, attends to the row's
 * slots [slot_base, slot_base + past_len + j + 1) of KV head h / (H / KVH); out = softmax(q.K^T * scale) V.
 * Rows never see each other's slots; there are no padding entries and no mask tensor.
 *
 * Both versions share one SIMT core (attend): a block owns ONE KV head and up to 16 query vectors that read
 * it (the GQA group's q heads of up to 16/group consecutive tokens of a row), so every K/V tile loaded into
 * shared memory serves the whole group. Per 32-slot tile:
 *   1. all 128 threads copy K and V rows of the tile to shared memory (16-byte loads when head_dim % 8 == 0
 *      and the planes are 16-byte aligned; slots past the range are zero-filled);
 *   2. each warp owns up to 4 query vectors; lane j scores slot j for all of them (K row in shared memory
 *      with a 2-element pad so the 32 lanes hit 32 different banks; q broadcast from shared memory);
 *   3. online softmax in the log2 domain: running max m (warp max of the tile), rescale factor, p = 2^(s-m),
 *      per-lane partial sums l (summed over the warp once, at the end);
 *   4. o += p V: p goes through shared memory (one broadcast read per slot), lane owns dims
 *      {2*lane, 2*lane+1} + 64*k, read from the V tile as bf16 pairs.
 * - latentmas_attn_prefill: grid (ceil(max_q_len / tokens_per_block), n_rows, KVH); blocks past a row's
 *   tokens exit at once. Normalises and stores bf16.
 * - latentmas_attn_decode_partial: grid (ceil(max_kv_len / 256), n_rows, KVH); a block covers 256 slots of
 *   one row and writes unnormalised o, m and l (f32) to the workspace.
 * - latentmas_attn_decode_merge: grid (n_rows, ceil(H / 4)); one warp per (row, head) merges the chunks:
 *   M = max m_c, L = sum l_c 2^(m_c - M), out = sum o_c 2^(m_c - M) / L.
 * Tensor cores are not used (a future mma/wgmma path would keep this SIMT version as the emulated reference).
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu attention`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/backend/cpu/attention.rs (attention, AttnSpan).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace attn_impl {

constexpr int kThreads = LMAS_ATTN_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int BK = LMAS_ATTN_BK;
constexpr int QB = LMAS_ATTN_QB;
constexpr int QW = LMAS_ATTN_QW;
constexpr int PAIRS = LMAS_MAX_HEAD_DIM / 64;  // bf16 pairs per lane: dims 2*lane + 64*k, +1
constexpr float kLog2e = 1.4426950408889634f;

static_assert(BK == 32, "one slot per lane when scoring");
static_assert(QB == kWarps * QW, "every query vector of a block has a warp slot");

/* Dynamic shared memory: K tile [BK][d+2], V tile [BK][d], Q [QB][d] (bf16), P [warps][QW][BK] (f32). */
__host__ __device__ inline unsigned smem_bytes(unsigned d) {
    return (unsigned)((BK * (d + 2) + BK * d + QB * d) * 2 + kWarps * QW * BK * 4);
}

struct Queries {
    unsigned tok0;   // token index of query vector 0
    unsigned vis0;   // visible slots of token 0 (relative to slot_base)
    unsigned group;  // q heads per KV head: query i is token tok0 + i / group, head kvh * group + i % group
    unsigned n;      // query vectors (<= QB)
};

/* Per-warp running state of its (up to QW) query vectors; lives in registers (loops are fully unrolled). */
struct State {
    float m[QW];
    float l[QW];
    float o[QW][2 * PAIRS];
};

/* Attends the block's queries to slots [kv_begin, kv_end) (relative to slot_base) of KV head kvh. */
__device__ __forceinline__ void attend(const LmasAttnParams& p, unsigned slot_base, unsigned kvh, unsigned kv_begin,
                                       unsigned kv_end, const Queries& qs, bf16* Ks, bf16* Vs, bf16* Qs, float* Ps,
                                       State& st) {
    const unsigned d = p.head_dim, ks = d + 2;
    const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const size_t kv_row = (size_t)p.n_kv_heads * d;
    const bf16* kbase = p.k_cache + (size_t)kvh * d;
    const bf16* vbase = p.v_cache + (size_t)kvh * d;
    const bool vec_kv = d % 8 == 0 && lmas::aligned16(p.k_cache) && lmas::aligned16(p.v_cache);
    const bool vec_q = d % 8 == 0 && p.q_stride % 8 == 0 && lmas::aligned16(p.q);
    const float scale = p.scale * kLog2e;

    // queries of this block -> Qs
    if (vec_q) {
        const unsigned chunks = d / 8;
        for (unsigned e = tid; e < qs.n * chunks; e += kThreads) {
            const unsigned i = e / chunks, c = (e % chunks) * 8;
            const unsigned t = qs.tok0 + i / qs.group, h = kvh * qs.group + i % qs.group;
            *reinterpret_cast<uint4*>(Qs + i * d + c) =
                *reinterpret_cast<const uint4*>(p.q + (size_t)t * p.q_stride + (size_t)h * d + c);
        }
    } else {
        for (unsigned e = tid; e < qs.n * d; e += kThreads) {
            const unsigned i = e / d, c = e % d;
            const unsigned t = qs.tok0 + i / qs.group, h = kvh * qs.group + i % qs.group;
            Qs[i * d + c] = p.q[(size_t)t * p.q_stride + (size_t)h * d + c];
        }
    }

    // this warp's query vectors: i = s * kWarps + warp for s < cnt
    const unsigned cnt = qs.n > warp ? (qs.n - warp + kWarps - 1) / kWarps : 0;
#pragma unroll
    for (int s = 0; s < QW; s++) {
        st.m[s] = -INFINITY;
        st.l[s] = 0.0f;
#pragma unroll
        for (int k = 0; k < 2 * PAIRS; k++) st.o[s][k] = 0.0f;
    }

    for (unsigned tile = kv_begin; tile < kv_end; tile += BK) {
        const unsigned valid = kv_end - tile < (unsigned)BK ? kv_end - tile : (unsigned)BK;
        __syncthreads();  // Qs written (first tile) / previous tile consumed
        // 1. K, V tile -> shared memory
        if (vec_kv) {
            const unsigned chunks = d / 8;
            for (unsigned e = tid; e < BK * chunks; e += kThreads) {
                const unsigned j = e / chunks, c = (e % chunks) * 8;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
                if (j < valid) {
                    const size_t off = (size_t)(slot_base + tile + j) * kv_row + c;
                    kv = *reinterpret_cast<const uint4*>(kbase + off);
                    vv = *reinterpret_cast<const uint4*>(vbase + off);
                }
                unsigned* kd = reinterpret_cast<unsigned*>(Ks + j * ks + c);  // 4-byte aligned (padded rows)
                kd[0] = kv.x;
                kd[1] = kv.y;
                kd[2] = kv.z;
                kd[3] = kv.w;
                *reinterpret_cast<uint4*>(Vs + j * d + c) = vv;
            }
        } else {
            for (unsigned e = tid; e < BK * d; e += kThreads) {
                const unsigned j = e / d, c = e % d;
                bf16 kx = __ushort_as_bfloat16(0), vx = __ushort_as_bfloat16(0);
                if (j < valid) {
                    const size_t off = (size_t)(slot_base + tile + j) * kv_row + c;
                    kx = kbase[off];
                    vx = vbase[off];
                }
                Ks[j * ks + c] = kx;
                Vs[j * d + c] = vx;
            }
        }
        __syncthreads();
        if (cnt == 0) continue;

        // 2. scores: lane = slot of the tile, all of this warp's queries at once
        float sc[QW];
#pragma unroll
        for (int s = 0; s < QW; s++) sc[s] = 0.0f;
        const bf16* krow = Ks + lane * ks;
        for (unsigned c = 0; c < d; c += 2) {
            const unsigned kw = *reinterpret_cast<const unsigned*>(krow + c);
            const float k0 = lmas::bf16_lo(kw), k1 = lmas::bf16_hi(kw);
#pragma unroll
            for (int s = 0; s < QW; s++) {
                if ((unsigned)s < cnt) {
                    const unsigned qw = *reinterpret_cast<const unsigned*>(Qs + (s * kWarps + warp) * d + c);
                    sc[s] += lmas::bf16_lo(qw) * k0 + lmas::bf16_hi(qw) * k1;
                }
            }
        }
        // 3. online softmax
#pragma unroll
        for (int s = 0; s < QW; s++) {
            if ((unsigned)s >= cnt) continue;
            const unsigned i = s * kWarps + warp;
            const unsigned vis = qs.vis0 + i / qs.group;
            const bool ok = lane < valid && tile + lane < vis;
            const float x = ok ? sc[s] * scale : -INFINITY;
            const float mn = fmaxf(st.m[s], lmas::warp_max(x));
            const float alpha = mn == -INFINITY ? 1.0f : exp2f(st.m[s] - mn);
            const float pr = ok ? exp2f(x - mn) : 0.0f;
            st.l[s] = st.l[s] * alpha + pr;
#pragma unroll
            for (int k = 0; k < 2 * PAIRS; k++) st.o[s][k] *= alpha;
            st.m[s] = mn;
            Ps[(warp * QW + s) * BK + lane] = pr;
        }
        __syncwarp();
        // 4. o += p V
        for (unsigned j = 0; j < valid; j++) {
            float v[2 * PAIRS];
#pragma unroll
            for (int k = 0; k < PAIRS; k++) {
                const unsigned c = 64 * k + 2 * lane;
                if (c < d) {
                    const unsigned vw = *reinterpret_cast<const unsigned*>(Vs + j * d + c);
                    v[2 * k] = lmas::bf16_lo(vw);
                    v[2 * k + 1] = lmas::bf16_hi(vw);
                } else {
                    v[2 * k] = v[2 * k + 1] = 0.0f;
                }
            }
#pragma unroll
            for (int s = 0; s < QW; s++) {
                if ((unsigned)s >= cnt) continue;
                const float pj = Ps[(warp * QW + s) * BK + j];
#pragma unroll
                for (int k = 0; k < 2 * PAIRS; k++) st.o[s][k] += pj * v[k];
            }
        }
        __syncwarp();  // Ps is rewritten by the next tile
    }
}

}  // namespace attn_impl

extern "C" __global__ void __launch_bounds__(LMAS_ATTN_THREADS) latentmas_attn_prefill(const LmasAttnParams p) {
    using namespace attn_impl;
    LMAS_DYN_SHARED(unsigned char, smem);
    const unsigned d = p.head_dim;
    bf16* Ks = reinterpret_cast<bf16*>(smem);
    bf16* Vs = Ks + BK * (d + 2);
    bf16* Qs = Vs + BK * d;
    float* Ps = reinterpret_cast<float*>(Qs + QB * d);

    const unsigned group = p.n_heads / p.n_kv_heads;
    const unsigned tpb = QB / group;  // tokens per block
    const LmasRow row = p.rows[blockIdx.y];
    const unsigned kvh = blockIdx.z;
    const unsigned j0 = blockIdx.x * tpb;
    if (j0 >= row.q_len) return;  // whole block
    const unsigned ntok = row.q_len - j0 < tpb ? row.q_len - j0 : tpb;
    Queries qs;
    qs.tok0 = row.q_start + j0;
    qs.vis0 = row.past_len + j0 + 1;
    qs.group = group;
    qs.n = ntok * group;
    State st;
    attend(p, row.slot_base, kvh, 0, row.past_len + j0 + ntok, qs, Ks, Vs, Qs, Ps, st);

    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const unsigned cnt = qs.n > warp ? (qs.n - warp + kWarps - 1) / kWarps : 0;
#pragma unroll
    for (int s = 0; s < QW; s++) {
        if ((unsigned)s >= cnt) continue;
        const unsigned i = s * kWarps + warp;
        const unsigned t = qs.tok0 + i / group, h = kvh * group + i % group;
        const float inv = 1.0f / lmas::warp_sum(st.l[s]);
        bf16* o = p.out + ((size_t)t * p.n_heads + h) * d;
#pragma unroll
        for (int k = 0; k < PAIRS; k++) {
            const unsigned c = 64 * k + 2 * lane;
            if (c < d) *reinterpret_cast<unsigned*>(o + c) = lmas::pack2(st.o[s][2 * k] * inv, st.o[s][2 * k + 1] * inv);
        }
    }
}

namespace attn_impl {
/* Workspace layout of the decode path: o [n_rows][chunks][H][d], then ml [n_rows][chunks][H][2]. */
__host__ __device__ inline unsigned decode_chunks(unsigned max_kv_len) {
    return (max_kv_len + LMAS_DECODE_CHUNK - 1) / LMAS_DECODE_CHUNK;
}
}  // namespace attn_impl

extern "C" __global__ void __launch_bounds__(LMAS_ATTN_THREADS) latentmas_attn_decode_partial(const LmasAttnParams p) {
    using namespace attn_impl;
    LMAS_DYN_SHARED(unsigned char, smem);
    const unsigned d = p.head_dim;
    bf16* Ks = reinterpret_cast<bf16*>(smem);
    bf16* Vs = Ks + BK * (d + 2);
    bf16* Qs = Vs + BK * d;
    float* Ps = reinterpret_cast<float*>(Qs + QB * d);

    const unsigned group = p.n_heads / p.n_kv_heads;
    const unsigned r = blockIdx.y, kvh = blockIdx.z, chunk = blockIdx.x;
    const LmasRow row = p.rows[r];
    if (row.q_len != 1) return;  // whole block: decode rows carry exactly one token
    const unsigned vis = row.past_len + 1;
    const unsigned c0 = chunk * LMAS_DECODE_CHUNK;
    if (c0 >= vis) return;  // whole block
    const unsigned c1 = vis - c0 < (unsigned)LMAS_DECODE_CHUNK ? vis : c0 + LMAS_DECODE_CHUNK;
    Queries qs;
    qs.tok0 = row.q_start;
    qs.vis0 = vis;
    qs.group = group;
    qs.n = group;
    State st;
    attend(p, row.slot_base, kvh, c0, c1, qs, Ks, Vs, Qs, Ps, st);

    const unsigned nch = decode_chunks(p.max_kv_len);
    const size_t n_o = (size_t)p.n_rows * nch * p.n_heads * d;
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const unsigned cnt = qs.n > warp ? (qs.n - warp + kWarps - 1) / kWarps : 0;
#pragma unroll
    for (int s = 0; s < QW; s++) {
        if ((unsigned)s >= cnt) continue;
        const unsigned i = s * kWarps + warp;
        const unsigned h = kvh * group + i;
        const size_t idx = ((size_t)r * nch + chunk) * p.n_heads + h;
        const float l = lmas::warp_sum(st.l[s]);
        float* o = p.workspace + idx * d;
#pragma unroll
        for (int k = 0; k < PAIRS; k++) {
            const unsigned c = 64 * k + 2 * lane;
            if (c < d) *reinterpret_cast<float2*>(o + c) = make_float2(st.o[s][2 * k], st.o[s][2 * k + 1]);
        }
        if (lane == 0) *reinterpret_cast<float2*>(p.workspace + n_o + idx * 2) = make_float2(st.m[s], l);
    }
}

extern "C" __global__ void __launch_bounds__(LMAS_ATTN_THREADS) latentmas_attn_decode_merge(const LmasAttnParams p) {
    using namespace attn_impl;
    const unsigned r = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const unsigned h = blockIdx.y * kWarps + warp;
    const LmasRow row = p.rows[r];
    if (row.q_len != 1 || h >= p.n_heads) return;  // per warp; no barrier in this kernel
    const unsigned d = p.head_dim;
    const unsigned nch = decode_chunks(p.max_kv_len);
    const unsigned used = (row.past_len + 1 + LMAS_DECODE_CHUNK - 1) / LMAS_DECODE_CHUNK;
    const size_t n_o = (size_t)p.n_rows * nch * p.n_heads * d;
    const size_t base = (size_t)r * nch * p.n_heads + h;  // + c * H
    float mx = -INFINITY;
    for (unsigned c = 0; c < used; c++) mx = fmaxf(mx, p.workspace[n_o + (base + (size_t)c * p.n_heads) * 2]);
    float acc[2 * PAIRS];
#pragma unroll
    for (int k = 0; k < 2 * PAIRS; k++) acc[k] = 0.0f;
    float l = 0.0f;
    for (unsigned c = 0; c < used; c++) {
        const size_t idx = base + (size_t)c * p.n_heads;
        const float2 ml = *reinterpret_cast<const float2*>(p.workspace + n_o + idx * 2);
        const float w = exp2f(ml.x - mx);
        l += ml.y * w;
        const float* o = p.workspace + idx * d;
#pragma unroll
        for (int k = 0; k < PAIRS; k++) {
            const unsigned cc = 64 * k + 2 * lane;
            if (cc < d) {
                const float2 v = *reinterpret_cast<const float2*>(o + cc);
                acc[2 * k] += v.x * w;
                acc[2 * k + 1] += v.y * w;
            }
        }
    }
    const float inv = 1.0f / l;
    bf16* out = p.out + ((size_t)row.q_start * p.n_heads + h) * d;
#pragma unroll
    for (int k = 0; k < PAIRS; k++) {
        const unsigned cc = 64 * k + 2 * lane;
        if (cc < d) *reinterpret_cast<unsigned*>(out + cc) = lmas::pack2(acc[2 * k] * inv, acc[2 * k + 1] * inv);
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

namespace attn_impl {
static bool check_common(const char* k, const LmasAttnParams* p, LmasPlan* plan) {
    if (p->head_dim == 0 || p->head_dim % 2 != 0 || p->head_dim > LMAS_MAX_HEAD_DIM) {
        snprintf(plan->error, LMAS_PLAN_ERROR_LEN, "%s: head_dim %u must be even and in [2, %u]", k, p->head_dim,
                 LMAS_MAX_HEAD_DIM);
        return false;
    }
    if (p->n_kv_heads == 0 || p->n_heads % p->n_kv_heads != 0 || p->n_heads / p->n_kv_heads > (unsigned)QB) {
        snprintf(plan->error, LMAS_PLAN_ERROR_LEN,
                 "%s: n_heads %u must be a multiple of n_kv_heads %u with a group of at most %d", k, p->n_heads,
                 p->n_kv_heads, QB);
        return false;
    }
    if (p->q_stride < p->n_heads * p->head_dim) {
        snprintf(plan->error, LMAS_PLAN_ERROR_LEN, "%s: q_stride %u < n_heads * head_dim = %u", k, p->q_stride,
                 p->n_heads * p->head_dim);
        return false;
    }
    if (p->n_rows > 65535 || p->n_kv_heads > 65535) {
        snprintf(plan->error, LMAS_PLAN_ERROR_LEN, "%s: %u rows / %u kv heads exceed the grid", k, p->n_rows,
                 p->n_kv_heads);
        return false;
    }
    return true;
}
}  // namespace attn_impl

extern "C" void lmas_plan_attn_prefill(const LmasAttnParams* p, LmasPlan* plan) {
    using namespace attn_impl;
    if (!check_common("latentmas_attn_prefill", p, plan)) return;
    if (p->n_rows == 0 || p->max_q_len == 0) return;
    const unsigned tpb = QB / (p->n_heads / p->n_kv_heads);
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_attn_prefill",
                                   {(p->max_q_len + tpb - 1) / tpb, p->n_rows, p->n_kv_heads},
                                   {kThreads, 1, 1},
                                   smem_bytes(p->head_dim),
                                   0};
}

extern "C" void lmas_plan_attn_decode(const LmasAttnParams* p, LmasPlan* plan) {
    using namespace attn_impl;
    if (!check_common("latentmas_attn_decode", p, plan)) return;
    if (p->n_rows == 0) return;
    if (p->max_kv_len == 0) LMAS_PLAN_FAIL(plan, "latentmas_attn_decode: max_kv_len must be >= 1");
    const unsigned nch = decode_chunks(p->max_kv_len);
    plan->n_launches = 2;
    plan->launches[0] = LmasLaunch{"latentmas_attn_decode_partial",
                                   {nch, p->n_rows, p->n_kv_heads},
                                   {kThreads, 1, 1},
                                   smem_bytes(p->head_dim),
                                   0};
    plan->launches[1] =
        LmasLaunch{"latentmas_attn_decode_merge", {p->n_rows, (p->n_heads + kWarps - 1) / kWarps, 1}, {kThreads, 1, 1}, 0, 0};
    plan->workspace_bytes = (uint64_t)p->n_rows * nch * p->n_heads * (p->head_dim + 2) * sizeof(float);
}

LMAS_EMU_ENTRY(attn_prefill, LmasAttnParams, LMAS_KERNEL(latentmas_attn_prefill))
LMAS_EMU_ENTRY(attn_decode, LmasAttnParams, LMAS_KERNEL(latentmas_attn_decode_partial),
               LMAS_KERNEL(latentmas_attn_decode_merge))
