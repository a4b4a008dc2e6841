/* Kernels with planted bugs, one per emulator check (emulation build only; not part of the fatbin).
 * tests/kernels_emu.rs runs each and asserts that the emulator reports it (see emu_api.h for the list).
 */
#include "../common.cuh"

extern "C" __global__ void lmas_selftest_race(const LmasEmuTestParams p) {
    __shared__ float s[1];
    if (threadIdx.x == 0) s[0] = 42.0f;
    if (p.variant == LMAS_EMU_TEST_RACE_FIXED) __syncthreads();
    p.out[threadIdx.x] = s[0];  // without the barrier: a read racing with thread 0's write
}

extern "C" __global__ void lmas_selftest_mask(const LmasEmuTestParams p) {
    float v = (float)threadIdx.x;
    if (p.variant == LMAS_EMU_TEST_MASK_EXITED && threadIdx.x % 32 >= 16) return;
    v = __shfl_xor_sync(0xffffffffu, v, 1);
    p.out[threadIdx.x] = v;
}

extern "C" __global__ void lmas_selftest_uninit(const LmasEmuTestParams p) {
    __shared__ float s[64];
    if (threadIdx.x % 2 == 0) s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    p.out[threadIdx.x] = s[threadIdx.x];  // odd threads read a slot nobody wrote
}

extern "C" __global__ void lmas_selftest_deadlock(const LmasEmuTestParams p) {
    float v = (float)threadIdx.x;
    if (p.variant == LMAS_EMU_TEST_DEADLOCK) {
        if (threadIdx.x < 16) {
            __syncthreads();
        } else {
            v = __shfl_sync(0xffffffffu, v, 0);
        }
    } else {
        if (threadIdx.x < 16) {
            __syncthreads();
        } else {
            __syncthreads();
        }
    }
    p.out[threadIdx.x] = v;
}

extern "C" __global__ void lmas_selftest_dyn(const LmasEmuTestParams p) {
    LMAS_DYN_SHARED(float, s);
    s[threadIdx.x] = 1.0f;  // 64 threads x 4 bytes = exactly the 256 bytes planned
    if (threadIdx.x == 0) s[64] = 2.0f;  // one float past the end
    __syncthreads();
    p.out[threadIdx.x] = s[threadIdx.x];
}

extern "C" __global__ void lmas_selftest_trap(const LmasEmuTestParams p) {
    if (threadIdx.x == 3) __trap();
    p.out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void lmas_selftest_early_exit(const LmasEmuTestParams p) {
    if (threadIdx.x >= 48) return;
    __syncthreads();
    p.out[threadIdx.x] = 1.0f;
}

extern "C" void lmas_plan_selftest(const LmasEmuTestParams* p, LmasPlan* plan) {
    const char* k = nullptr;
    uint32_t threads = 64, smem = 0;
    switch (p->variant) {
        case LMAS_EMU_TEST_RACE:
        case LMAS_EMU_TEST_RACE_FIXED: k = "lmas_selftest_race"; break;
        case LMAS_EMU_TEST_MASK_MISSING: k = "lmas_selftest_mask"; threads = 16; break;
        case LMAS_EMU_TEST_MASK_EXITED: k = "lmas_selftest_mask"; threads = 32; break;
        case LMAS_EMU_TEST_UNINIT_SHARED: k = "lmas_selftest_uninit"; break;
        case LMAS_EMU_TEST_DEADLOCK:
        case LMAS_EMU_TEST_DIVERGENT: k = "lmas_selftest_deadlock"; threads = 32; break;
        case LMAS_EMU_TEST_DYN_OVERFLOW: k = "lmas_selftest_dyn"; smem = 64 * 4; break;
        case LMAS_EMU_TEST_TRAP: k = "lmas_selftest_trap"; break;
        case LMAS_EMU_TEST_EARLY_EXIT: k = "lmas_selftest_early_exit"; break;
        default: LMAS_PLAN_FAIL(plan, "selftest: unknown variant %u", p->variant);
    }
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{k, {1, 1, 1}, {threads, 1, 1}, smem, 0};
}

LMAS_EMU_ENTRY(selftest, LmasEmuTestParams, LMAS_KERNEL(lmas_selftest_race), LMAS_KERNEL(lmas_selftest_mask),
               LMAS_KERNEL(lmas_selftest_uninit), LMAS_KERNEL(lmas_selftest_deadlock), LMAS_KERNEL(lmas_selftest_dyn),
               LMAS_KERNEL(lmas_selftest_trap), LMAS_KERNEL(lmas_selftest_early_exit))
