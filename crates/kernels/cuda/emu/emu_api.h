/* crates/kernels/cuda/emu/emu_api.h: the C interface between Rust (crates/kernels/src/emu.rs) and the host emulator.
 *
 * Every op `x` of crates/kernels/cuda/<op>.cu exports `int lmas_emu_x(const LmasXParams*, const LmasEmuOptions*,
 * LmasEmuError*)`: it asks the op's planner (lmas_plan_x) for the launches and runs each of them on the CPU.
 * The return value is the error code (0 = ok); the message says what happened, where, in which block and
 * thread. Nothing aborts the process: a violation is an error value, so tests can assert it.
 */
#ifndef LMAS_EMU_API_H
#define LMAS_EMU_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a block's threads are run. */
#define LMAS_EMU_MODE_AUTO 0    /* LATENTMAS_EMU_MODE=threads|fibers if set, else the build's default */
#define LMAS_EMU_MODE_FIBERS 1  /* fibers on the calling thread: fast, deterministic */
#define LMAS_EMU_MODE_THREADS 2 /* one OS thread per CUDA thread (the ThreadSanitizer build's only mode) */

/* Order in which runnable fibers are resumed; a kernel whose output depends on it has a race. */
#define LMAS_EMU_SCHEDULE_FORWARD 0
#define LMAS_EMU_SCHEDULE_REVERSE 1

typedef struct LmasEmuOptions {
    uint32_t mode;
    uint32_t schedule;
} LmasEmuOptions;

/* Error codes. */
#define LMAS_EMU_OK 0
#define LMAS_EMU_INVALID_PLAN 1        /* the planner refused the params (message = its reason) */
#define LMAS_EMU_BAD_LAUNCH 2          /* grid/block/shared sizes a GPU would refuse */
#define LMAS_EMU_BARRIER_DIVERGENCE 3  /* __syncthreads reached from different sites, or after a thread exited */
#define LMAS_EMU_BAD_WARP_SYNC 4       /* shuffle/ballot/syncwarp mask names a missing or exited lane, ... */
#define LMAS_EMU_DEADLOCK 5            /* every live thread waits and nothing can release them */
#define LMAS_EMU_SHARED_OVERFLOW 6     /* a write past the dynamic shared memory size */
#define LMAS_EMU_DATA_RACE 7           /* ThreadSanitizer reported a race during the launch */
#define LMAS_EMU_TRAP 8                /* the kernel called __trap() / failed an LMAS_DEVICE_CHECK */
#define LMAS_EMU_INTERNAL 9            /* the emulator itself failed (out of memory, thread creation) */

#define LMAS_EMU_MESSAGE_LEN 2048

typedef struct LmasEmuError {
    int32_t code;
    uint32_t mode_used;
    char message[LMAS_EMU_MESSAGE_LEN];
} LmasEmuError;

/* Build facts: bit 0 = ThreadSanitizer build, bit 1 = bf16 from CUDA's cuda_bf16.h (else the fallback). */
uint32_t lmas_emu_build_flags(void);

/* Compares the fallback bf16 conversions with cuda_bf16.h's host paths over a sweep of inputs; returns the
 * number of mismatches (0), or -1 when this build has no cuda_bf16.h to compare with. */
int64_t lmas_emu_bf16_selfcheck(void);

/* Entries of the layout table (see crates/kernels/cuda/emu/layout.cpp): struct / field / offset-or-value / size. */
typedef struct LmasLayoutEntry {
    const char* scope;
    const char* name;
    uint64_t value;
    uint64_t size;
} LmasLayoutEntry;
const LmasLayoutEntry* lmas_layout_table(uint32_t* count);

/* Runs ONE kernel by its symbol name with the parameter bytes a driver assembled for it (an emulated
 * cuLaunchKernel): the kernel's single argument is its op's params struct, so `params_bytes` must equal that
 * struct's size. `max_dyn_shared` is the dynamic shared memory limit the caller grants (48 KiB unless the
 * function opted in to more). Returns LMAS_EMU_UNKNOWN_KERNEL when no op of this build has that kernel. */
#define LMAS_EMU_UNKNOWN_KERNEL 10
#define LMAS_EMU_PARAMS_SIZE 11 /* params_bytes differs from the kernel's parameter struct */
/* A kernel touched an address no host mapping backs (never mapped, freed, a guard page): SIGSEGV/SIGBUS in
 * kernel code is caught on the thread that ran it and ends the launch with this code. */
#define LMAS_EMU_ILLEGAL_ADDRESS 12
/* The address of the last launch on the calling thread that ended with LMAS_EMU_ILLEGAL_ADDRESS. */
uintptr_t lmas_emu_fault_address(void);
struct LmasLaunch;
int lmas_emu_launch_named(const char* kernel, const struct LmasLaunch* launch, const void* params,
                          size_t params_bytes, uint32_t max_dyn_shared, const LmasEmuOptions* o, LmasEmuError* e);

/* Negative tests of the emulator's checks (crates/kernels/cuda/emu/selftest.cu, emulation build only). */
#define LMAS_EMU_TEST_RACE 0          /* thread 0 writes shared s[0], all read it, no barrier */
#define LMAS_EMU_TEST_RACE_FIXED 1    /* the same with the barrier (control: no report, schedules agree) */
#define LMAS_EMU_TEST_MASK_MISSING 2  /* full-mask shuffle in a 16-thread block (lanes 16-31 do not exist) */
#define LMAS_EMU_TEST_MASK_EXITED 3   /* full-mask shuffle that lanes 16-31 never reach (they exit) */
#define LMAS_EMU_TEST_UNINIT_SHARED 4 /* reads shared memory that only even threads wrote */
#define LMAS_EMU_TEST_DEADLOCK 5      /* lanes 0-15 wait at __syncthreads, lanes 16-31 at a full-mask shuffle */
#define LMAS_EMU_TEST_DIVERGENT 6     /* lanes 0-15 and 16-31 wait at two different __syncthreads */
#define LMAS_EMU_TEST_DYN_OVERFLOW 7  /* thread 0 writes 4 bytes past the dynamic shared memory */
#define LMAS_EMU_TEST_TRAP 8          /* thread 3 calls __trap() */
#define LMAS_EMU_TEST_EARLY_EXIT 9    /* threads >= 48 return before a __syncthreads the others reach */

typedef struct LmasEmuTestParams {
    float* out;        /* [64] */
    uint32_t variant;  /* LMAS_EMU_TEST_* */
    uint32_t _pad;
} LmasEmuTestParams;

int lmas_emu_selftest(const LmasEmuTestParams* p, const LmasEmuOptions* o, LmasEmuError* e);

#ifdef __cplusplus
}
#endif

#endif /* LMAS_EMU_API_H */
