/* The latent step's input embedding, fused into one kernel (../shared/reference/LATENTMAS.md, "One latent
 * step"): for each row r of the launch,
 *     a = h[in_rows[r]] . W_a            (D x D product, f32 accumulation)
 *     e = a / max(||a||, 1e-6) * target_norm
 *     out[out_rows[r]] = bf16(e)         (straight into the next input-embedding slot)
 *
 * W_a is passed transposed (w_a_t[j] = column j of W_a, [out, in] row-major like an nn.Linear weight), so
 * feature j is one contiguous dot product: warp w of block b computes features j = b*8 + w, + grid*8, ...
 * for ALL rows at once (each weight row is read once per launch, 16-byte loads when D % 8 == 0), and writes
 * them as f32 to the workspace. The norm needs every feature, so the block that finishes last (a counter
 * in the workspace, __threadfence + atomicAdd: the "threadFenceReduction" pattern) computes each row's norm
 * with a block reduction, writes the rescaled bf16 rows, and resets the counter to 0 for the next launch.
 * Workspace: [counter u32, pad to 16 bytes][a: n_rows x D f32]; zero it once when allocating.
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu latent`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/backend/cpu/matmul.rs (a = h . W_a^T^T) + the rescale; written out in
// tests/kernels_emu.rs (latent_twin).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace latent_impl {
constexpr int kThreads = LMAS_LATENT_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRows = LMAS_LATENT_MAX_ROWS;
/* Workspace bytes before the f32 features (the counter, padded for 16-byte alignment). */
constexpr unsigned kHeader = 16;
}  // namespace latent_impl

extern "C" __global__ void __launch_bounds__(LMAS_LATENT_THREADS) latentmas_latent_project(const LmasLatentParams p) {
    using namespace latent_impl;
    __shared__ float red[32];
    __shared__ unsigned is_last;
    const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const unsigned D = p.dim, R = p.n_rows;
    unsigned* counter = reinterpret_cast<unsigned*>(p.workspace);
    float* a = p.workspace + kHeader / sizeof(float);
    const bf16* hrow[kMaxRows];
#pragma unroll
    for (int r = 0; r < kMaxRows; r++) {
        hrow[r] = (unsigned)r < R ? p.h + (size_t)(p.in_rows ? p.in_rows[r] : r) * D : p.h;
    }
    bool vec = D % 8 == 0 && lmas::aligned16(p.w_a_t) && lmas::aligned16(p.h);

    // 1. a[r, j] for this block's features (the loop bound is uniform per warp)
    for (unsigned j = blockIdx.x * kWarps + warp; j < D; j += gridDim.x * kWarps) {
        float acc[kMaxRows];
#pragma unroll
        for (int r = 0; r < kMaxRows; r++) acc[r] = 0.0f;
        const bf16* w = p.w_a_t + (size_t)j * D;
        if (vec) {
            for (unsigned c = lane * 8; c < D; c += 32 * 8) {
                float wv[8];
                lmas::load8(w + c, wv);
#pragma unroll
                for (int r = 0; r < kMaxRows; r++) {
                    if ((unsigned)r < R) {
                        float hv[8];
                        lmas::load8(hrow[r] + c, hv);
#pragma unroll
                        for (int k = 0; k < 8; k++) acc[r] += wv[k] * hv[k];
                    }
                }
            }
        } else {
            for (unsigned c = lane; c < D; c += 32) {
                const float wv = lmas::to_f32(w[c]);
#pragma unroll
                for (int r = 0; r < kMaxRows; r++) {
                    if ((unsigned)r < R) acc[r] += wv * lmas::to_f32(hrow[r][c]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < kMaxRows; r++) {
            if ((unsigned)r < R) {
                const float s = lmas::warp_sum(acc[r]);
                if (lane == 0) a[(size_t)r * D + j] = s;
            }
        }
    }

    // 2. the last block to finish normalises every row
    __threadfence();
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1 ? 1u : 0u;
    __syncthreads();
    if (!is_last) return;  // whole block
    __threadfence();
    for (unsigned r = 0; r < R; r++) {
        const float* ar = a + (size_t)r * D;
        float ss = 0.0f;
        for (unsigned j = tid; j < D; j += kThreads) {
            const float v = __ldcg(ar + j);
            ss += v * v;
        }
        const float norm = sqrtf(lmas::block_sum<kWarps>(ss, red));
        const float scale = p.target_norm / fmaxf(norm, 1e-6f);
        bf16* o = p.out + (size_t)(p.out_rows ? p.out_rows[r] : r) * D;
        for (unsigned j = tid; j < D; j += kThreads) o[j] = lmas::to_bf16(__ldcg(ar + j) * scale);
    }
    if (tid == 0) *counter = 0;
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_latent_project(const LmasLatentParams* p, LmasPlan* plan) {
    using namespace latent_impl;
    const char* k = "latentmas_latent_project";
    if (p->dim == 0) LMAS_PLAN_FAIL(plan, "%s: dim must be > 0", k);
    if (p->n_rows > (unsigned)kMaxRows)
        LMAS_PLAN_FAIL(plan, "%s: %u rows > %d per launch (launch again for the rest)", k, p->n_rows, kMaxRows);
    if (p->n_rows == 0) return;
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{k, {(p->dim + kWarps - 1) / kWarps, 1, 1}, {kThreads, 1, 1}, 0, 0};
    plan->workspace_bytes = kHeader + (uint64_t)p->n_rows * p->dim * sizeof(float);
}

LMAS_EMU_ENTRY(latent_project, LmasLatentParams, LMAS_KERNEL(latentmas_latent_project))
