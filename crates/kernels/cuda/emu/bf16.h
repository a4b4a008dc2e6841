/* crates/kernels/cuda/emu/bf16.h: the slice of cuda_bf16.h / vector_types.h that the kernels use, for emulation builds
 * that have no CUDA headers (no CUDA_HOME). The conversions are bit-exact with CUDA's host paths
 * (bf16_fallback.h). Kernels use ONLY: __nv_bfloat16, __nv_bfloat162, __float2bfloat16(_rn),
 * __bfloat162float, __bfloat16_as_ushort, __ushort_as_bfloat16, uint2/uint4/float2/float4/uint3 and their
 * make_* functions. Anything else must be added here and in the selfcheck.
 */
#ifndef LMAS_EMU_BF16_H
#define LMAS_EMU_BF16_H

#include "bf16_fallback.h"

struct __nv_bfloat16 {
    unsigned short __x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x;
    __nv_bfloat16 y;
};

static inline unsigned short __bfloat16_as_ushort(const __nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(const unsigned short u) {
    __nv_bfloat16 h;
    h.__x = u;
    return h;
}
static inline float __bfloat162float(const __nv_bfloat16 h) { return lmas_fb_bf162float(h.__x); }
static inline __nv_bfloat16 __float2bfloat16_rn(const float f) { return __ushort_as_bfloat16(lmas_fb_float2bf16_rn(f)); }
static inline __nv_bfloat16 __float2bfloat16(const float f) { return __float2bfloat16_rn(f); }

struct uint2 {
    unsigned int x, y;
};
struct uint3 {
    unsigned int x, y, z;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
static inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
static inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return uint4{x, y, z, w};
}
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

#endif /* LMAS_EMU_BF16_H */
