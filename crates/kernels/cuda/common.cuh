/* crates/kernels/cuda/common.cuh: what every kernel file includes.
 *
 * - The CUDA surface: <cuda_bf16.h> under nvcc, crates/kernels/cuda/emu/emu.h in the host-emulation build (-DLMAS_EMU).
 * - LMAS_DYN_SHARED(T, name): a T* to the launch's dynamic shared memory (16-byte aligned).
 * - LMAS_EMU_ENTRY(op, Params, LMAS_KERNEL(k1), ...): the op's emulation entry (nothing under nvcc).
 * - bf16 helpers (f32 math, bf16 storage): 8-wide 16-byte vector loads/stores, round-to-nearest-even stores.
 * - Warp and block reductions over all 32 lanes (blocks are always whole warps).
 *
 * Everything here is header-only and `static`/inline so that the fatbin build (one translation unit that
 * includes every crates/kernels/cuda/<op>.cu) and the emulation build (one object per file) both link.
 */
#ifndef LMAS_COMMON_CUH
#define LMAS_COMMON_CUH

#include "params.h"

#ifdef LMAS_EMU
#include "emu/emu.h"
#else
#include <cuda_bf16.h>
#define LMAS_DYN_SHARED(T, name)                                \
    extern __shared__ __align__(16) unsigned char lmas_dyn_smem[]; \
    T* name = reinterpret_cast<T*>(lmas_dyn_smem)
#define LMAS_EMU_ENTRY(...)
#define LMAS_KERNEL(fn)
#endif

typedef __nv_bfloat16 bf16;

#define LMAS_FULL_MASK 0xffffffffu

/* Formats a planner error into plan->error and returns from the planner. */
#define LMAS_PLAN_FAIL(plan, ...)                                            \
    do {                                                                     \
        snprintf((plan)->error, LMAS_PLAN_ERROR_LEN, __VA_ARGS__);          \
        (plan)->n_launches = 0;                                              \
        return;                                                              \
    } while (0)

#include <stdio.h>

namespace lmas {

__device__ __forceinline__ float bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float to_f32(bf16 h) { return __bfloat162float(h); }
__device__ __forceinline__ bf16 to_bf16(float f) { return __float2bfloat16_rn(f); }
__device__ __forceinline__ unsigned pack2(float a, float b) {
    return (unsigned)__bfloat16_as_ushort(to_bf16(a)) | ((unsigned)__bfloat16_as_ushort(to_bf16(b)) << 16);
}
__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

/* 8 consecutive bf16 at a 16-byte aligned address, widened to f32 (exact). */
__device__ __forceinline__ void load8(const bf16* p, float v[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    v[0] = bf16_lo(u.x);
    v[1] = bf16_hi(u.x);
    v[2] = bf16_lo(u.y);
    v[3] = bf16_hi(u.y);
    v[4] = bf16_lo(u.z);
    v[5] = bf16_hi(u.z);
    v[6] = bf16_lo(u.w);
    v[7] = bf16_hi(u.w);
}

/* 8 f32 rounded to bf16 (nearest even) and stored with one 16-byte store. */
__device__ __forceinline__ void store8(bf16* p, const float v[8]) {
    uint4 u;
    u.x = pack2(v[0], v[1]);
    u.y = pack2(v[2], v[3]);
    u.z = pack2(v[4], v[5]);
    u.w = pack2(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LMAS_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(LMAS_FULL_MASK, v, o));
    return v;
}

/* Sum over the block; every thread gets the total. `red` is a __shared__ float[32] of the caller. Two
 * barriers: red is free again on return. Deterministic (fixed reduction tree). */
template <int WARPS>
__device__ __forceinline__ float block_sum(float v, float* red) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < WARPS ? red[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}

template <int WARPS>
__device__ __forceinline__ float block_max(float v, float* red) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < WARPS ? red[lane] : -INFINITY;
    t = warp_max(t);
    __syncthreads();
    return t;
}

/* The row of token t (rows sorted by q_start, tokens contiguous), or -1. Binary search, O(log n_rows). */
__device__ __forceinline__ int find_row(const LmasRow* rows, unsigned n_rows, unsigned t) {
    int lo = 0, hi = (int)n_rows - 1, found = -1;
    while (lo <= hi) {
        const int mid = (lo + hi) >> 1;
        if (rows[mid].q_start <= t) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (found >= 0 && t - rows[found].q_start >= rows[found].q_len) {
        // t falls in an empty row's slot range: rows with q_len == 0 share q_start with the next row
        // (binary search picks the last row starting at or before t, which is the non-empty one, unless the
        // table is malformed).
        return -1;
    }
    return found;
}

}  // namespace lmas

#endif /* LMAS_COMMON_CUH */
