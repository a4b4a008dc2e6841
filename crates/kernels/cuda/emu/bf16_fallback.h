/* crates/kernels/cuda/emu/bf16_fallback.h: bit-exact bf16 <-> f32 conversions for builds without cuda_bf16.h.
 *
 * Same algorithm as the host path of CUDA's cuda_bf16.hpp (__internal_float2bfloat16 + round to nearest
 * even): any NaN becomes the canonical 0x7FFF, everything else is rounded to nearest, ties to even, with
 * overflow to infinity. bf16 -> f32 is exact (the top half of an f32). lmas_emu_bf16_selfcheck() compares
 * these functions with cuda_bf16.h's whenever a build has both.
 */
#ifndef LMAS_BF16_FALLBACK_H
#define LMAS_BF16_FALLBACK_H

#include <stdint.h>
#include <string.h>

static inline unsigned short lmas_fb_float2bf16_rn(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffU) > 0x7f800000U) {
        return 0x7fffU;
    }
    uint32_t r = x >> 16;
    const uint32_t rem = x << 16;
    if (rem > 0x80000000U || (rem == 0x80000000U && (r & 1U) != 0U)) {
        r++;
    }
    return (unsigned short)r;
}

static inline float lmas_fb_bf162float(unsigned short h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

#endif /* LMAS_BF16_FALLBACK_H */
