/* Per-head q/k RMSNorm + half-split RoPE + KV write, fused (one kernel per layer and forward call).
 *
 * For every new token t (LmasRow: slot = slot_base + past_len + j, position = pos_base + past_len + j):
 *   q heads:  q = rope(rmsnorm(q) * q_norm, pos)          written back in place in the qkv row
 *   k heads:  K[slot] = rope(rmsnorm(k) * k_norm, pos)    written to this layer's K plane
 *   v heads:  V[slot] = v                                 copied to this layer's V plane
 * RoPE pairs element i with i + d/2 at angle pos * inv_freq[i] (inv_freq from the host, the same f32 table
 * the cpu backend uses). Norm and rotation run in f32 and round to bf16 once.
 *
 * One block of 128 threads (4 warps) per token; the token's H + 2*KVH heads are spread over the warps.
 * - Vector version (head_dim/2 a multiple of 8 and head_dim/16 a power of two <= 32, 16-byte aligned
 *   buffers): G = head_dim/16 lanes per head, each lane owns 8 pairs (one 16-byte load of the low half, one
 *   of the high half), so the rotation needs no exchange; the sum of squares is reduced over the G lanes
 *   with xor-shuffles. head_dim 128 -> 8 lanes per head, 4 heads per warp.
 * - Scalar version (any even head_dim <= 256): one warp per head, lane l owns pairs l, l+32, ...; two passes
 *   over the head (sum of squares, then normalise/rotate/store).
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu qk`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/backend/cpu/qk.rs (qk_norm_rope_write_kv), src/backend/cpu/rope.rs (inv_freq, angles).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace qk_impl {

constexpr int kThreads = LMAS_QK_THREADS;
constexpr int kWarps = kThreads / 32;

enum Kind { Q = 0, K = 1, V = 2 };

/* Source, destination and norm weight of head h of token t. */
struct Head {
    const bf16* src;
    bf16* dst;
    const bf16* norm;
    int kind;
};

__device__ __forceinline__ Head head_of(const LmasQkNormRopeParams& p, unsigned t, unsigned h, unsigned slot,
                                        bool slot_ok) {
    const unsigned d = p.head_dim;
    const size_t width = (size_t)(p.n_heads + 2 * p.n_kv_heads) * d;
    bf16* row = p.qkv + (size_t)t * width;
    Head r;
    if (h < p.n_heads) {
        r.src = row + (size_t)h * d;
        r.dst = row + (size_t)h * d;
        r.norm = p.q_norm;
        r.kind = Q;
    } else if (h < p.n_heads + p.n_kv_heads) {
        const unsigned kh = h - p.n_heads;
        r.src = row + (size_t)h * d;
        r.dst = slot_ok ? p.k_cache + ((size_t)slot * p.n_kv_heads + kh) * d : nullptr;
        r.norm = p.k_norm;
        r.kind = K;
    } else {
        const unsigned vh = h - p.n_heads - p.n_kv_heads;
        r.src = row + (size_t)h * d;
        r.dst = slot_ok ? p.v_cache + ((size_t)slot * p.n_kv_heads + vh) * d : nullptr;
        r.norm = nullptr;
        r.kind = V;
    }
    return r;
}

}  // namespace qk_impl

extern "C" __global__ void __launch_bounds__(LMAS_QK_THREADS) latentmas_qk_norm_rope_kv(const LmasQkNormRopeParams p) {
    using namespace qk_impl;
    const unsigned t = blockIdx.x;
    const int r = lmas::find_row(p.rows, p.n_rows, t);
    if (r < 0) return;  // whole block: malformed row table
    const LmasRow row = p.rows[r];
    const unsigned j = t - row.q_start;
    const unsigned slot = row.slot_base + row.past_len + j;
    const float pos = (float)(row.pos_base + row.past_len + j);
    const bool slot_ok = slot < p.n_slots;
    const unsigned d = p.head_dim, half = d / 2;
    const unsigned total = p.n_heads + 2 * p.n_kv_heads;
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const unsigned g = half / 8;  // lanes per head in the vector version
    const bool vec = half % 8 == 0 && g <= 32 && (g & (g - 1)) == 0 && lmas::aligned16(p.qkv) &&
                     lmas::aligned16(p.k_cache) && lmas::aligned16(p.v_cache) && lmas::aligned16(p.q_norm) &&
                     lmas::aligned16(p.k_norm);
    if (vec) {
        const unsigned per_warp = 32 / g;
        const unsigned sl = lane % g;  // lane within the head's group
        const unsigned i0 = sl * 8;    // first pair this lane owns
        // the loop bound is uniform per warp, so all 32 lanes reach every shuffle
        for (unsigned base = warp * per_warp; base < total; base += kWarps * per_warp) {
            const unsigned h = base + lane / g;
            const bool active = h < total;
            Head hd = head_of(p, t, active ? h : 0, slot, slot_ok);
            float lo[8], hi[8];
            if (active) {
                lmas::load8(hd.src + i0, lo);
                lmas::load8(hd.src + half + i0, hi);
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) lo[k] = hi[k] = 0.0f;
            }
            float ss = 0.0f;
#pragma unroll
            for (int k = 0; k < 8; k++) ss += lo[k] * lo[k] + hi[k] * hi[k];
            for (unsigned o = g / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(LMAS_FULL_MASK, ss, (int)o);
            if (!active || hd.dst == nullptr) continue;
            if (hd.kind != V) {
                const float scale = rsqrtf(ss / (float)d + p.eps);
                float wl[8], wh[8];
                lmas::load8(hd.norm + i0, wl);
                lmas::load8(hd.norm + half + i0, wh);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const float a = wl[k] * (lo[k] * scale);
                    const float b = wh[k] * (hi[k] * scale);
                    float s, c;
                    sincosf(pos * p.inv_freq[i0 + k], &s, &c);
                    lo[k] = a * c - b * s;
                    hi[k] = b * c + a * s;
                }
            }
            lmas::store8(hd.dst + i0, lo);
            lmas::store8(hd.dst + half + i0, hi);
        }
    } else {
        for (unsigned h = warp; h < total; h += kWarps) {
            Head hd = head_of(p, t, h, slot, slot_ok);
            float ss = 0.0f;
            for (unsigned i = lane; i < half; i += 32) {
                const float a = lmas::to_f32(hd.src[i]), b = lmas::to_f32(hd.src[i + half]);
                ss += a * a + b * b;
            }
            ss = lmas::warp_sum(ss);
            if (hd.dst == nullptr) continue;
            const float scale = rsqrtf(ss / (float)d + p.eps);
            for (unsigned i = lane; i < half; i += 32) {
                float a = lmas::to_f32(hd.src[i]), b = lmas::to_f32(hd.src[i + half]);
                if (hd.kind != V) {
                    a = lmas::to_f32(hd.norm[i]) * (a * scale);
                    b = lmas::to_f32(hd.norm[i + half]) * (b * scale);
                    float s, c;
                    sincosf(pos * p.inv_freq[i], &s, &c);
                    const float ra = a * c - b * s;
                    const float rb = b * c + a * s;
                    a = ra;
                    b = rb;
                }
                hd.dst[i] = lmas::to_bf16(a);
                hd.dst[i + half] = lmas::to_bf16(b);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_qk_norm_rope(const LmasQkNormRopeParams* p, LmasPlan* plan) {
    const char* k = "latentmas_qk_norm_rope_kv";
    if (p->head_dim == 0 || p->head_dim % 2 != 0 || p->head_dim > LMAS_MAX_HEAD_DIM)
        LMAS_PLAN_FAIL(plan, "%s: head_dim %u must be even and in [2, %u]", k, p->head_dim, LMAS_MAX_HEAD_DIM);
    if (p->n_heads == 0 || p->n_kv_heads == 0)
        LMAS_PLAN_FAIL(plan, "%s: n_heads (%u) and n_kv_heads (%u) must be > 0", k, p->n_heads, p->n_kv_heads);
    if (p->n_tokens == 0) return;
    if (p->n_rows == 0) LMAS_PLAN_FAIL(plan, "%s: %u tokens but no rows", k, p->n_tokens);
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{k, {p->n_tokens, 1, 1}, {LMAS_QK_THREADS, 1, 1}, 0, 0};
}

LMAS_EMU_ENTRY(qk_norm_rope, LmasQkNormRopeParams, LMAS_KERNEL(latentmas_qk_norm_rope_kv))
