/* crates/kernels/cuda/emu/emu.h: the CUDA surface the kernels use, implemented on the CPU (host emulation).
 *
 * The kernels in crates/kernels/cuda/<op>.cu are compiled twice from the same source: by nvcc for the GPU, and by g++
 * (C++20, -x c++, -DLMAS_EMU) with this header for tests that run them on the CPU (crates/kernels/cuda/emu/emu.cpp runs
 * the launches). What the emulator models:
 *
 * - Blocks run one after another. A block's threads run either as fibers on the calling thread
 *   (default: fast and deterministic; the resume order can be forward or reverse, see below) or as one OS
 *   thread per CUDA thread (LMAS_EMU_MODE_THREADS; the only mode of the ThreadSanitizer build).
 * - __syncthreads() is a block barrier. Arrivals from different source lines, or a barrier that a thread
 *   of the block has already exited before, are errors (LMAS_EMU_BARRIER_DIVERGENCE).
 * - Warp intrinsics (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp) are a rendezvous of
 *   the lanes named in the mask. Errors: the caller is not in its mask, the mask names a lane that does not
 *   exist or has exited, lanes of overlapping masks meet at different intrinsics or masks, a shuffle reads a
 *   lane outside the mask (LMAS_EMU_BAD_WARP_SYNC).
 * - When every live thread waits and no barrier or rendezvous can complete, the launch stops with
 *   LMAS_EMU_DEADLOCK and a list of who waits where. (A thread that spins on memory instead of waiting at a
 *   barrier never yields in fiber mode: the kernels must not spin.)
 * - Static __shared__ variables are block-wide statics in the `lmas_emu_shared` section, filled with 0xFF
 *   bytes (a NaN for f32 and bf16) before every block, so a read before any write shows up as NaN in the
 *   output. Dynamic shared memory (LMAS_DYN_SHARED) is poisoned the same way and followed by a guard whose
 *   change is reported (LMAS_EMU_SHARED_OVERFLOW).
 * - Races: in fiber mode a thread runs uninterrupted between two synchronisation points, so a missing
 *   barrier shows up as output that depends on the resume order (tests run forward AND reverse and compare
 *   bit for bit); in the ThreadSanitizer build every CUDA thread is an OS thread and TSan reports races on
 *   shared and global memory, which the launch returns as LMAS_EMU_DATA_RACE.
 *
 * Not modelled: tensor cores (mma/wgmma), TMA, cp.async, inline PTX, clusters, warp-synchronous code without
 * the _sync intrinsics, races between different blocks (they run one after another), memory ordering.
 */
#ifndef LMAS_EMU_H
#define LMAS_EMU_H

#ifndef LMAS_EMU
#error "crates/kernels/cuda/emu/emu.h is for the host-emulation build (-DLMAS_EMU)"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <source_location>

#include "emu_api.h"
#include "../params.h"

#if LMAS_EMU_HAVE_CUDA_BF16
#include <cuda_bf16.h>
#include <vector_functions.h>
#else
#include "bf16.h"
#endif

/* CUDA's host_defines.h (pulled in by cuda_bf16.h) maps these to nothing or to attributes meant for nvcc;
 * the emulator gives them host meanings. */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
/* LMAS_PLAN_ONLY: the launch planners alone (the C library without the emulator). Kernels become inline
 * functions nothing calls, so none is emitted and nothing references the emulator's runtime. */
#ifdef LMAS_PLAN_ONLY
#define __global__ inline
#else
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
/* A block-wide static in a section the emulator poisons before every block. Declare __shared__ variables
 * only in non-template functions (a template's statics would be COMDAT and may not join the section). */
#define __shared__ __attribute__((section("lmas_emu_shared"), aligned(16))) static

namespace lmas_emu {

struct ThreadCtx {
    uint3 thread_idx;
    uint3 block_idx;
    uint32_t linear;
};

/* The CUDA thread running on this OS thread (fiber mode: switched with the fiber). */
extern thread_local ThreadCtx* t_cur;
extern uint3 g_block_dim;
extern uint3 g_grid_dim;

enum WarpOp : int {
    OP_SHFL_IDX = 0,
    OP_SHFL_XOR = 1,
    OP_SHFL_DOWN = 2,
    OP_SHFL_UP = 3,
    OP_BALLOT = 4,
    OP_ANY = 5,
    OP_ALL = 6,
    OP_SYNCWARP = 7,
};

void syncthreads(const char* file, unsigned line);
uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width, const char* file, unsigned line);
void* dyn_shared();
[[noreturn]] void trap(const char* file, unsigned line, const char* what);

/* Dynamic shared memory a GPU grants without the function opting in to more. */
constexpr uint32_t kDefaultMaxDynShared = 48 * 1024;

/* One launch of `fn(ctx)` per CUDA thread over the grid; fills `err` and returns its code. `max_dyn_shared`
 * is the most dynamic shared memory the launch may ask for (a driver raises it for functions that opted in). */
int launch(const LmasLaunch& l, void (*fn)(void*), void* ctx, const LmasEmuOptions* opts, LmasEmuError* err,
           uint32_t max_dyn_shared = kDefaultMaxDynShared);

template <class P>
struct KernelRef {
    const char* name;
    void (*fn)(P);
};

int plan_error(const char* op, const LmasPlan& plan, LmasEmuError* err);
int params_size_mismatch(const char* kernel, size_t got, size_t want, LmasEmuError* err);
int unknown_kernel(const char* op, const char* kernel, LmasEmuError* err);
void clear_error(LmasEmuError* err);

/* Plans the op with the real planner and runs each planned launch. */
template <class P, size_t N>
int run_plan(const char* op, void (*planner)(const P*, LmasPlan*), const KernelRef<P> (&kernels)[N], const P* p,
             const LmasEmuOptions* opts, LmasEmuError* err) {
    clear_error(err);
    LmasPlan plan;
    memset(&plan, 0, sizeof(plan));
    planner(p, &plan);
    if (plan.error[0] != '\0') {
        return plan_error(op, plan, err);
    }
    for (uint32_t i = 0; i < plan.n_launches; i++) {
        const LmasLaunch& l = plan.launches[i];
        const KernelRef<P>* k = nullptr;
        for (size_t j = 0; j < N; j++) {
            if (strcmp(kernels[j].name, l.kernel) == 0) {
                k = &kernels[j];
            }
        }
        if (k == nullptr) {
            return unknown_kernel(op, l.kernel, err);
        }
        struct Ctx {
            void (*fn)(P);
            const P* p;
        } ctx{k->fn, p};
        const int rc = launch(l, [](void* c) { static_cast<Ctx*>(c)->fn(*static_cast<Ctx*>(c)->p); }, &ctx, opts,
                              err);
        if (rc != LMAS_EMU_OK) {
            return rc;
        }
    }
    return LMAS_EMU_OK;
}

/* One kernel launched by name with its parameter bytes (an emulated driver's cuLaunchKernel). */
template <class P, size_t N>
int run_named(const KernelRef<P> (&kernels)[N], const char* name, const LmasLaunch& l, const void* params,
              size_t params_bytes, uint32_t max_dyn_shared, const LmasEmuOptions* opts, LmasEmuError* err) {
    const KernelRef<P>* k = nullptr;
    for (size_t j = 0; j < N; j++) {
        if (strcmp(kernels[j].name, name) == 0) {
            k = &kernels[j];
        }
    }
    if (k == nullptr) {
        return -1;  // not this op's kernel
    }
    clear_error(err);
    if (params_bytes != sizeof(P)) {
        return params_size_mismatch(name, params_bytes, sizeof(P), err);
    }
    P p;
    memcpy(&p, params, sizeof(P));
    struct Ctx {
        void (*fn)(P);
        const P* p;
    } ctx{k->fn, &p};
    return launch(l, [](void* c) { static_cast<Ctx*>(c)->fn(*static_cast<Ctx*>(c)->p); }, &ctx, opts, err,
                  max_dyn_shared);
}

/* An op's kernels as the by-name lookup sees them (one entry per LMAS_EMU_ENTRY, in section lmas_emu_ops). */
struct OpEntry {
    const char* op;
    int (*run)(const char* name, const LmasLaunch& l, const void* params, size_t params_bytes,
               uint32_t max_dyn_shared, const LmasEmuOptions* opts, LmasEmuError* err);
};

template <class T>
inline uint64_t to_bits(const T& v) {
    static_assert(sizeof(T) <= 8, "warp intrinsics exchange at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace lmas_emu

#define threadIdx (::lmas_emu::t_cur->thread_idx)
#define blockIdx (::lmas_emu::t_cur->block_idx)
#define blockDim (::lmas_emu::g_block_dim)
#define gridDim (::lmas_emu::g_grid_dim)
#define warpSize 32

/* ---- synchronisation ---- */

inline void __syncthreads(std::source_location l = std::source_location::current()) {
    ::lmas_emu::syncthreads(l.file_name(), l.line());
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location l = std::source_location::current()) {
    (void)::lmas_emu::warp_op(::lmas_emu::OP_SYNCWARP, mask, 0, 0, 32, l.file_name(), l.line());
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32,
                     std::source_location l = std::source_location::current()) {
    return ::lmas_emu::from_bits<T>(::lmas_emu::warp_op(::lmas_emu::OP_SHFL_IDX, mask, ::lmas_emu::to_bits(v),
                                                        src_lane, width, l.file_name(), l.line()));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                         std::source_location l = std::source_location::current()) {
    return ::lmas_emu::from_bits<T>(::lmas_emu::warp_op(::lmas_emu::OP_SHFL_XOR, mask, ::lmas_emu::to_bits(v),
                                                        lane_mask, width, l.file_name(), l.line()));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                          std::source_location l = std::source_location::current()) {
    return ::lmas_emu::from_bits<T>(::lmas_emu::warp_op(::lmas_emu::OP_SHFL_DOWN, mask, ::lmas_emu::to_bits(v),
                                                        (int)delta, width, l.file_name(), l.line()));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                        std::source_location l = std::source_location::current()) {
    return ::lmas_emu::from_bits<T>(::lmas_emu::warp_op(::lmas_emu::OP_SHFL_UP, mask, ::lmas_emu::to_bits(v),
                                                        (int)delta, width, l.file_name(), l.line()));
}
inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location l = std::source_location::current()) {
    return (unsigned)::lmas_emu::warp_op(::lmas_emu::OP_BALLOT, mask, pred != 0, 0, 32, l.file_name(), l.line());
}
inline int __any_sync(unsigned mask, int pred, std::source_location l = std::source_location::current()) {
    return (int)::lmas_emu::warp_op(::lmas_emu::OP_ANY, mask, pred != 0, 0, 32, l.file_name(), l.line());
}
inline int __all_sync(unsigned mask, int pred, std::source_location l = std::source_location::current()) {
    return (int)::lmas_emu::warp_op(::lmas_emu::OP_ALL, mask, pred != 0, 0, 32, l.file_name(), l.line());
}
[[noreturn]] inline void __trap(std::source_location l = std::source_location::current()) {
    ::lmas_emu::trap(l.file_name(), l.line(), "__trap()");
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* ---- atomics (blocks run one after another, but threads mode runs a block's threads concurrently) ---- */

inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    return old;
}

/* ---- loads with cache hints: plain loads on the host ---- */

template <class T>
inline T __ldg(const T* p) {
    return *p;
}
template <class T>
inline T __ldcg(const T* p) {
    return *p;
}

/* ---- math: device intrinsics with host equivalents (the GPU's approximate ones differ by a few ulp) ---- */

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline int __float_as_int(float f) {
    int u;
    memcpy(&u, &f, 4);
    return u;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

/* Dynamic shared memory of the launch (plan.shared_bytes), poisoned before every block. */
#define LMAS_DYN_SHARED(T, name) T* name = reinterpret_cast<T*>(::lmas_emu::dyn_shared())

/* The emulation entry of an op: `lmas_emu_<op>(params, options, error)`, running the planned launches; and
 * its kernels registered for `lmas_emu_launch_named` (a launch by kernel name, as a driver makes it). */
/* `retain` keeps an op's entry through the linker's section GC (`used` alone does not): nothing references
 * the entries except the weak `__start_`/`__stop_` bounds of their section. */
#if defined(__has_attribute)
#if __has_attribute(retain)
#define LMAS_EMU_RETAIN __attribute__((retain))
#endif
#endif
#ifndef LMAS_EMU_RETAIN
#define LMAS_EMU_RETAIN
#endif
#ifdef LMAS_PLAN_ONLY
#define LMAS_KERNEL(fn)
#define LMAS_EMU_ENTRY(...)
#else
#define LMAS_KERNEL(fn) {#fn, fn}
#define LMAS_EMU_ENTRY(op, Params, ...)                                                                      \
    static const ::lmas_emu::KernelRef<Params> lmas_emu_kernels_##op[] = {__VA_ARGS__};                        \
    extern "C" int lmas_emu_##op(const Params* p, const LmasEmuOptions* o, LmasEmuError* e) {                 \
        return ::lmas_emu::run_plan(#op, lmas_plan_##op, lmas_emu_kernels_##op, p, o, e);                       \
    }                                                                                                        \
    static int lmas_emu_named_##op(const char* name, const LmasLaunch& l, const void* params, size_t bytes,   \
                                   uint32_t max_dyn, const LmasEmuOptions* o, LmasEmuError* e) {              \
        return ::lmas_emu::run_named(lmas_emu_kernels_##op, name, l, params, bytes, max_dyn, o, e);             \
    }                                                                                                        \
    LMAS_EMU_RETAIN __attribute__((used, section("lmas_emu_ops"), aligned(8))) static const ::lmas_emu::OpEntry \
        lmas_emu_op_##op = {#op, lmas_emu_named_##op};
#endif

#endif /* LMAS_EMU_H */
