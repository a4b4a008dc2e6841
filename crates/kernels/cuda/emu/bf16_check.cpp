/* crates/kernels/cuda/emu/bf16_check.cpp: lmas_emu_bf16_selfcheck() compares the fallback bf16 conversions
 * (bf16_fallback.h, used when a build has no CUDA headers) with the host paths of CUDA's cuda_bf16.h.
 * Inputs: every bf16 bit pattern (bf16 -> f32), and for f32 -> bf16 every 16-bit high half combined with
 * 64 low halves that include the rounding-critical ones (0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, ...): all
 * exponents, signs, subnormals, infinities, NaNs, exact ties and near-ties. 65536 * 64 = 4.2M cases.
 */
#include <stdint.h>
#include <string.h>

#include "emu_api.h"
#include "bf16_fallback.h"

#if LMAS_EMU_HAVE_CUDA_BF16
#include <cuda_bf16.h>

extern "C" int64_t lmas_emu_bf16_selfcheck(void) {
    static const uint32_t lows[64] = {
        0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x00ff, 0x0100, 0x0fff, 0x1000, 0x3fff, 0x4000, 0x5555,
        0x7ffd, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0x8002, 0x8003, 0x8fff, 0x9000, 0xaaaa, 0xbfff, 0xc000,
        0xdead, 0xe000, 0xefff, 0xf000, 0xfff0, 0xfffd, 0xfffe, 0xffff, 0x1234, 0x2345, 0x3456, 0x4567,
        0x5678, 0x6789, 0x789a, 0x89ab, 0x9abc, 0xabcd, 0xbcde, 0xcdef, 0xdef0, 0xef01, 0xf012, 0x0123,
        0x7f00, 0x80ff, 0x7f7f, 0x8080, 0x4001, 0xc001, 0x3ffe, 0xbffe, 0x0800, 0xf800, 0x0400, 0xfc00,
        0x0200, 0xfe00, 0x0080, 0xff80};
    int64_t bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const __nv_bfloat16 b = __ushort_as_bfloat16((unsigned short)h);
        const float a = __bfloat162float(b), c = lmas_fb_bf162float((unsigned short)h);
        if (memcmp(&a, &c, 4) != 0) bad++;
        for (uint32_t k = 0; k < 64; k++) {
            const uint32_t bits = (h << 16) | lows[k];
            float f;
            memcpy(&f, &bits, 4);
            const unsigned short want = __bfloat16_as_ushort(__float2bfloat16_rn(f));
            if (want != lmas_fb_float2bf16_rn(f)) bad++;
            if (__bfloat16_as_ushort(__float2bfloat16(f)) != want) bad++;
        }
    }
    return bad;
}
#else
extern "C" int64_t lmas_emu_bf16_selfcheck(void) { return -1; }
#endif
