/* RMSNorm, plain and with the fused residual add of the pre-norm decoder.
 *
 *   latentmas_rmsnorm:      out[r] = w * (x[r] / sqrt(mean(x[r]^2) + eps))
 *   latentmas_add_rmsnorm:  residual[r] = bf16(residual[r] + delta[r]); out[r] = rmsnorm(residual[r]) * w
 *
 * One block of 256 threads per row. Pass 1 reads the row (16-byte loads of 8 bf16 when dim % 8 == 0 and
 * every pointer is 16-byte aligned, else one element per thread per step), adds delta and stores the rounded
 * residual (add version), and sums squares in f32; a block reduction gives the scale; pass 2 re-reads the
 * values the same thread just read or wrote (L1/L2 hits) and stores w * x * scale rounded to bf16. The sum
 * of squares uses the stored (rounded) residual, as a bf16 model computes it.
 *
 * Build: part of the fatbin (build.rs) and of the emulation library; run the emulated version with
 * `cargo test --test kernels_emu rmsnorm`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/backend/cpu/norm.rs (rms_norm, add_rms_norm); the tests compare against it.
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

// Every file's helpers live in a namespace of its own: the fatbin build compiles all files as ONE unit.
namespace rmsnorm_impl {

constexpr int kThreads = LMAS_RMSNORM_THREADS;
constexpr int kWarps = kThreads / 32;

/* ADD: residual is read, delta added, the rounded sum stored back and normalised. */
template <bool ADD>
__device__ __forceinline__ void rmsnorm_row(const bf16* __restrict__ x, bf16* __restrict__ residual,
                                            const bf16* __restrict__ delta, const bf16* __restrict__ w,
                                            bf16* __restrict__ out, unsigned dim, float eps, bool vec, float* red) {
    const unsigned tid = threadIdx.x;
    const bf16* src = ADD ? residual : x;
    float ss = 0.0f;
    if (vec) {
        for (unsigned i = tid * 8; i < dim; i += kThreads * 8) {
            float v[8];
            lmas::load8(src + i, v);
            if (ADD) {
                float d[8];
                lmas::load8(delta + i, d);
#pragma unroll
                for (int k = 0; k < 8; k++) v[k] = lmas::to_f32(lmas::to_bf16(v[k] + d[k]));
                lmas::store8(residual + i, v);
            }
#pragma unroll
            for (int k = 0; k < 8; k++) ss += v[k] * v[k];
        }
    } else {
        for (unsigned i = tid; i < dim; i += kThreads) {
            float v = lmas::to_f32(src[i]);
            if (ADD) {
                const bf16 r = lmas::to_bf16(v + lmas::to_f32(delta[i]));
                residual[i] = r;
                v = lmas::to_f32(r);
            }
            ss += v * v;
        }
    }
    const float total = lmas::block_sum<kWarps>(ss, red);
    const float scale = rsqrtf(total / (float)dim + eps);
    if (vec) {
        for (unsigned i = tid * 8; i < dim; i += kThreads * 8) {
            float v[8], g[8];
            lmas::load8(src + i, v);
            lmas::load8(w + i, g);
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] = g[k] * (v[k] * scale);
            lmas::store8(out + i, v);
        }
    } else {
        for (unsigned i = tid; i < dim; i += kThreads) {
            out[i] = lmas::to_bf16(lmas::to_f32(w[i]) * (lmas::to_f32(src[i]) * scale));
        }
    }
}

}  // namespace rmsnorm_impl

extern "C" __global__ void __launch_bounds__(LMAS_RMSNORM_THREADS) latentmas_rmsnorm(const LmasRmsNormParams p) {
    __shared__ float red[32];
    const unsigned row = blockIdx.x;
    const size_t off = (size_t)row * p.dim;
    const bool vec = p.dim % 8 == 0 && lmas::aligned16(p.x) && lmas::aligned16(p.weight) && lmas::aligned16(p.out);
    rmsnorm_impl::rmsnorm_row<false>(p.x + off, nullptr, nullptr, p.weight, p.out + off, p.dim, p.eps, vec, red);
}

extern "C" __global__ void __launch_bounds__(LMAS_RMSNORM_THREADS) latentmas_add_rmsnorm(const LmasAddRmsNormParams p) {
    __shared__ float red[32];
    const unsigned row = blockIdx.x;
    const size_t off = (size_t)row * p.dim;
    const bool vec = p.dim % 8 == 0 && lmas::aligned16(p.residual) && lmas::aligned16(p.delta) &&
                     lmas::aligned16(p.weight) && lmas::aligned16(p.out);
    rmsnorm_impl::rmsnorm_row<true>(nullptr, p.residual + off, p.delta + off, p.weight, p.out + off, p.dim, p.eps, vec, red);
}

// ----------------------------------------------------------------------------------------------------------
// launchers: the planners give grid/block/shared memory to cudarc and to the emulator alike
// ----------------------------------------------------------------------------------------------------------

namespace rmsnorm_impl {
static void plan_rows(const char* kernel, unsigned rows, unsigned dim, LmasPlan* plan) {
    if (dim == 0) LMAS_PLAN_FAIL(plan, "%s: dim must be > 0", kernel);
    if (rows == 0) return;  // nothing to do
    if (rows > 0x7fffffffu) LMAS_PLAN_FAIL(plan, "%s: %u rows exceed the grid", kernel, rows);
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{kernel, {rows, 1, 1}, {kThreads, 1, 1}, 0, 0};
}
}  // namespace rmsnorm_impl

extern "C" void lmas_plan_rmsnorm(const LmasRmsNormParams* p, LmasPlan* plan) {
    rmsnorm_impl::plan_rows("latentmas_rmsnorm", p->rows, p->dim, plan);
}

extern "C" void lmas_plan_add_rmsnorm(const LmasAddRmsNormParams* p, LmasPlan* plan) {
    rmsnorm_impl::plan_rows("latentmas_add_rmsnorm", p->rows, p->dim, plan);
}

LMAS_EMU_ENTRY(rmsnorm, LmasRmsNormParams, LMAS_KERNEL(latentmas_rmsnorm))
LMAS_EMU_ENTRY(add_rmsnorm, LmasAddRmsNormParams, LMAS_KERNEL(latentmas_add_rmsnorm))
