/* SwiGLU of the MLP: out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i], silu(x) = x / (1 + e^-x).
 *
 * Reads the fused [n, 2*inter] gate|up projection (one GEMM produces both halves) and writes [n, inter].
 * Grid-stride over 8-element chunks with 16-byte loads/stores when inter % 8 == 0 and the buffers are
 * 16-byte aligned, else over single elements. f32 math, one bf16 rounding.
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu swiglu`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/backend/cpu/activation.rs (silu, swiglu).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace swiglu_impl {
/* Enough blocks to fill a GPU several times over; more would only add scheduling (grid-stride loop). */
constexpr unsigned kMaxBlocks = 1024;
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
}  // namespace swiglu_impl

extern "C" __global__ void __launch_bounds__(LMAS_STREAM_THREADS) latentmas_swiglu(const LmasSwigluParams p) {
    using swiglu_impl::silu;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = p.inter % 8 == 0 && lmas::aligned16(p.gate_up) && lmas::aligned16(p.out);
    if (vec) {
        const size_t per_row = p.inter / 8, total = (size_t)p.n * per_row;
        for (size_t e = first; e < total; e += stride) {
            const size_t t = e / per_row, c = (e % per_row) * 8;
            const bf16* gu = p.gate_up + t * 2 * p.inter;
            float g[8], u[8];
            lmas::load8(gu + c, g);
            lmas::load8(gu + p.inter + c, u);
#pragma unroll
            for (int k = 0; k < 8; k++) g[k] = silu(g[k]) * u[k];
            lmas::store8(p.out + t * p.inter + c, g);
        }
    } else {
        const size_t total = (size_t)p.n * p.inter;
        for (size_t e = first; e < total; e += stride) {
            const size_t t = e / p.inter, c = e % p.inter;
            const bf16* gu = p.gate_up + t * 2 * p.inter;
            p.out[e] = lmas::to_bf16(silu(lmas::to_f32(gu[c])) * lmas::to_f32(gu[p.inter + c]));
        }
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_swiglu(const LmasSwigluParams* p, LmasPlan* plan) {
    if (p->n == 0 || p->inter == 0) return;
    const size_t units = p->inter % 8 == 0 ? (size_t)p->n * (p->inter / 8) : (size_t)p->n * p->inter;
    size_t blocks = (units + LMAS_STREAM_THREADS - 1) / LMAS_STREAM_THREADS;
    if (blocks > swiglu_impl::kMaxBlocks) blocks = swiglu_impl::kMaxBlocks;
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_swiglu", {(uint32_t)blocks, 1, 1}, {LMAS_STREAM_THREADS, 1, 1}, 0, 0};
}

LMAS_EMU_ENTRY(swiglu, LmasSwigluParams, LMAS_KERNEL(latentmas_swiglu))
