/* crates/kernels/cuda/emu/emu.cpp: the host emulator's runtime (see emu.h for what is modelled and what is checked).
 *
 * One launch at a time per process (g_launch_mu): static __shared__ variables are plain statics, so two
 * concurrent launches would share them. Tests running in parallel simply queue here.
 *
 * State machine, shared by both modes: every CUDA thread is Ready (running or runnable), waiting at the
 * block barrier, waiting at a warp rendezvous, or Done. An arrival that completes a barrier or rendezvous
 * releases the waiters on the spot, so "no thread is Ready and some are not Done" means deadlock.
 * - Fibers: a scheduler on the launching thread resumes Ready fibers in forward or reverse thread order;
 *   a fiber runs until it waits or finishes. No locking is needed.
 * - Threads: every CUDA thread is an OS thread (a pool of blockDim threads reused for all blocks); the state
 *   is guarded by one mutex and waiters sleep on one condition variable. An aborting launch wakes everyone
 *   and each waiter leaves its kernel with longjmp (kernels own no destructors).
 *
 * Written against libc only (no libstdc++ runtime, no exceptions) so that the library links anywhere.
 *
 * ThreadSanitizer build: this file is compiled WITHOUT instrumentation (only the kernels are), and the
 * emulator's own mutex/condition-variable traffic is hidden from TSan (AnnotateIgnoreSync), because every
 * emulator call takes the one mutex and TSan would otherwise see a happens-before edge between any two
 * CUDA threads that ever called into the emulator, hiding real races. Happens-before is then declared
 * exactly where CUDA gives it: block start (launcher -> threads), block end (threads -> launcher),
 * __syncthreads (every arrival -> every departure of that barrier phase) and __syncwarp (participants ->
 * participants). Shuffles, ballots and votes exchange values but order no memory, as on the GPU.
 */
#include "emu.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <signal.h>
#include "fault.h"
#include "fiber.h"
#include <unistd.h>

extern "C" {
/* Bounds of the static shared memory section (weak: absent when no kernel declares __shared__). */
extern unsigned char __start_lmas_emu_shared[] __attribute__((weak));
extern unsigned char __stop_lmas_emu_shared[] __attribute__((weak));
/* Bounds of the ops' by-name registrations (LMAS_EMU_ENTRY). */
extern const lmas_emu::OpEntry __start_lmas_emu_ops[] __attribute__((weak));
extern const lmas_emu::OpEntry __stop_lmas_emu_ops[] __attribute__((weak));
}

#if LMAS_EMU_TSAN
extern "C" {
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#define IGNORE_SYNC_BEGIN() AnnotateIgnoreSyncBegin(__FILE__, __LINE__)
#define IGNORE_SYNC_END() AnnotateIgnoreSyncEnd(__FILE__, __LINE__)
#define HB_RELEASE(addr) __tsan_release((void*)(addr))
#define HB_ACQUIRE(addr) __tsan_acquire((void*)(addr))
static int g_tsan_reports = 0;
extern "C" void __tsan_on_report(const void*) { __atomic_fetch_add(&g_tsan_reports, 1, __ATOMIC_SEQ_CST); }
/* Races are returned to the caller as errors; the process exit code must not turn them into a failure of
 * the negative test that plants one on purpose. */
extern "C" const char* __tsan_default_options() { return "exitcode=0:report_signal_unsafe=0"; }
/* Rust's std synchronises with atomics TSan cannot see (only this library is instrumented), so reports
 * whose stacks run through Rust's standard library (libtest's channels, ...) are false positives. */
extern "C" const char* __tsan_default_suppressions() {
    return "race:library/std/\nrace:library/core/\nrace:library/alloc/\nrace:/rustc/\n";
}
#else
#define IGNORE_SYNC_BEGIN() ((void)0)
#define IGNORE_SYNC_END() ((void)0)
#define HB_RELEASE(addr) ((void)(addr))
#define HB_ACQUIRE(addr) ((void)(addr))
#endif

namespace lmas_emu {

thread_local ThreadCtx* t_cur = nullptr;
uint3 g_block_dim = {1, 1, 1};
uint3 g_grid_dim = {1, 1, 1};

namespace {

/* Per-fiber stack: kernels keep a few hundred bytes of locals; error formatting needs a few KiB. */
constexpr size_t kFiberStack = 128 * 1024;
constexpr size_t kPage = 4096;
/* Poisoned bytes after the dynamic shared memory whose change means a write past its end. */
constexpr size_t kGuardBytes = 256;

enum St : uint8_t { READY, AT_BARRIER, AT_WARP, DONE };

struct Group {
    unsigned mask;
    unsigned arrived;
    int op;
    int width;
    const char* file;
    unsigned line;
    bool used;
};

const char* op_name(int op) {
    switch (op) {
        case OP_SHFL_IDX: return "__shfl_sync";
        case OP_SHFL_XOR: return "__shfl_xor_sync";
        case OP_SHFL_DOWN: return "__shfl_down_sync";
        case OP_SHFL_UP: return "__shfl_up_sync";
        case OP_BALLOT: return "__ballot_sync";
        case OP_ANY: return "__any_sync";
        case OP_ALL: return "__all_sync";
        case OP_SYNCWARP: return "__syncwarp";
        default: return "?";
    }
}

const char* base_name(const char* path) {
    const char* s = strrchr(path, '/');
    return s ? s + 1 : path;
}

struct Launch {
    const char* kernel;
    bool threads;
    bool reverse;
    unsigned n;  // threads per block
    unsigned nwarps;
    uint3 block;
    void (*fn)(void*);
    void* fn_ctx;

    ThreadCtx* ctx;
    St* st;
    const char** site_file;
    unsigned* site_line;
    int* site_op;  // warp op while AT_WARP
    uint64_t* val_in;
    uint64_t* val_out;
    int* arg;
    Group* groups;  // [nwarps][32]

    unsigned* par_out;   // SYNCWARP: per participant, the sync parities of the group's lanes (bit l = lane l)
    unsigned* arr_par;   // SYNCWARP: the parity a waiting lane released on
    unsigned* wsync;     // SYNCWARP: how many __syncwarp each thread has done (its own counter)
    unsigned char* lane_sync;   // TSan sync addresses: [n][2]
    unsigned char bar_sync[2];  // TSan sync addresses of the barrier phases (alternating)
    unsigned bar_seq;           // completed barrier phases of this block

    unsigned live;
    unsigned running;  // threads mode: threads not waiting (Ready and not Done)
    unsigned bar_count;
    const char* bar_file;
    unsigned bar_line;

    bool abort;
    LmasEmuError* err;

    unsigned char* dyn;
    size_t dyn_bytes;

    // fibers
    FiberCtx sched;
    FiberCtx* fctx;
    // threads
    pthread_mutex_t mu;
    pthread_cond_t* tcv;      // per thread: released from a barrier/rendezvous, or abort
    pthread_cond_t start_cv;  // a new block (or quit) for the workers
    pthread_cond_t done_cv;   // a worker finished its block
    unsigned long gen;
    unsigned finished;
    bool quit;
    jmp_buf* jb;

    uintptr_t fault_addr;  // LMAS_EMU_ILLEGAL_ADDRESS: the address the kernel touched
};

pthread_mutex_t g_launch_mu = PTHREAD_MUTEX_INITIALIZER;
Launch* L = nullptr;
/* The fault address of the calling thread's last launch (lmas_emu_fault_address). */
thread_local uintptr_t t_fault_addr = 0;

unsigned char* g_stacks = nullptr;
size_t g_stack_count = 0;

/* The emulator's own locking, invisible to TSan (see the file comment). */
void mu_lock(pthread_mutex_t* m) {
    IGNORE_SYNC_BEGIN();
    pthread_mutex_lock(m);
}
void mu_unlock(pthread_mutex_t* m) {
    pthread_mutex_unlock(m);
    IGNORE_SYNC_END();
}
void lock() {
    if (L->threads) mu_lock(&L->mu);
}
void unlock() {
    if (L->threads) mu_unlock(&L->mu);
}

/* Describes block coordinates for messages. */
int block_str(char* buf, size_t len) {
    return snprintf(buf, len, "block (%u,%u,%u)", L->block.x, L->block.y, L->block.z);
}

/* Records the first error of the launch and marks it aborted. Caller holds the lock (threads mode). */
void record(int code, const char* fmt, ...) {
    if (L->abort) return;
    L->abort = true;
    L->err->code = code;
    char head[160];
    block_str(head, sizeof head);
    int k = snprintf(L->err->message, sizeof L->err->message, "%s, %s: ", L->kernel, head);
    if (k < 0) k = 0;
    if ((size_t)k < sizeof L->err->message) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err->message + k, sizeof L->err->message - (size_t)k, fmt, ap);
        va_end(ap);
    }
    if (L->threads) {
        for (unsigned i = 0; i < L->n; i++) pthread_cond_signal(&L->tcv[i]);
    }
}

/* Leaves the calling CUDA thread's kernel after an abort. Caller holds the lock (threads mode). */
[[noreturn]] void leave(unsigned me) {
    if (L->threads) {
        mu_unlock(&L->mu);
        longjmp(L->jb[me], 1);
    }
    fiber_switch(&L->fctx[me], &L->sched);  // the scheduler never resumes an aborted launch
    abort();
}

/* Blocks the calling thread until released (or the launch aborts). Caller holds the lock; state is set. */
void wait_released(unsigned me);

/* Appends "threads a-b: <what>" lines describing who waits where (for deadlock messages). */
void describe_waiters(char* buf, size_t len) {
    size_t used = strlen(buf);
    unsigned i = 0;
    while (i < L->n && used + 1 < len) {
        const St s = L->st[i];
        unsigned j = i + 1;
        while (j < L->n && L->st[j] == s &&
               (s == DONE || s == READY ||
                (L->site_file[j] == L->site_file[i] && L->site_line[j] == L->site_line[i] &&
                 (s != AT_WARP || L->site_op[j] == L->site_op[i])))) {
            j++;
        }
        int k = 0;
        switch (s) {
            case AT_BARRIER:
                k = snprintf(buf + used, len - used, "\n  threads %u-%u wait at __syncthreads (%s:%u)", i, j - 1,
                             base_name(L->site_file[i]), L->site_line[i]);
                break;
            case AT_WARP: {
                const unsigned w = i / 32;
                unsigned mask = 0;
                for (unsigned g = 0; g < 32; g++) {
                    const Group& gr = L->groups[w * 32 + g];
                    if (gr.used && (gr.arrived >> (i % 32) & 1u)) mask = gr.mask;
                }
                k = snprintf(buf + used, len - used, "\n  threads %u-%u wait at %s mask 0x%08x (%s:%u)", i, j - 1,
                             op_name(L->site_op[i]), mask, base_name(L->site_file[i]), L->site_line[i]);
                break;
            }
            case DONE: k = snprintf(buf + used, len - used, "\n  threads %u-%u have exited", i, j - 1); break;
            case READY: k = snprintf(buf + used, len - used, "\n  threads %u-%u are running", i, j - 1); break;
        }
        if (k < 0) break;
        used += (size_t)k;
        if (used >= len) break;
        i = j;
    }
}

void deadlock() {
    char msg[LMAS_EMU_MESSAGE_LEN];
    snprintf(msg, sizeof msg, "deadlock: every live thread waits and none can be released:");
    describe_waiters(msg, sizeof msg);
    record(LMAS_EMU_DEADLOCK, "%s", msg);
}

/* A kernel touched memory the host has not mapped (caller holds the lock, threads mode). */
void record_fault(const FaultInfo& f) {
    const char* kind = f.write == 1 ? "write to" : f.write == 0 ? "read of" : "access to";
    record(LMAS_EMU_ILLEGAL_ADDRESS, "thread %d: illegal address: %s %#lx, which no device memory backs%s", f.thread,
           kind, (unsigned long)f.addr, f.sig == SIGBUS ? " (SIGBUS)" : "");
    L->fault_addr = f.addr;
}

void wait_released(unsigned me) {
    if (!L->threads) {
        fiber_switch(&L->fctx[me], &L->sched);
        return;  // resumed: released (an aborted launch is never resumed)
    }
    L->running--;
    if (L->running == 0 && L->live > 0) {
        deadlock();
    }
    while (L->st[me] != READY && !L->abort) {
        pthread_cond_wait(&L->tcv[me], &L->mu);
    }
    if (L->abort) leave(me);
}

/* Marks a waiting thread Ready (the releaser holds the lock). */
void release(unsigned i) {
    L->st[i] = READY;
    if (L->threads) {
        L->running++;
        pthread_cond_signal(&L->tcv[i]);
    }
}

unsigned current() { return t_cur->linear; }

/* The kernel function of thread `me` returned. */
void thread_exit(unsigned me) {
    lock();
    L->st[me] = DONE;
    L->live--;
    if (L->threads) L->running--;
    if (!L->abort && L->bar_count > 0) {
        record(LMAS_EMU_BARRIER_DIVERGENCE,
               "thread %u exited while %u thread(s) wait at __syncthreads (%s:%u); every thread of a block must "
               "reach each barrier",
               me, L->bar_count, base_name(L->bar_file), L->bar_line);
    }
    if (!L->abort) {
        const unsigned w = me / 32, lane = me % 32;
        for (unsigned g = 0; g < 32; g++) {
            const Group& gr = L->groups[w * 32 + g];
            if (gr.used && (gr.mask >> lane & 1u)) {
                record(LMAS_EMU_BAD_WARP_SYNC,
                       "lane %u of warp %u exited while named in the mask 0x%08x of a pending %s (%s:%u)", lane, w,
                       gr.mask, op_name(gr.op), base_name(gr.file), gr.line);
                break;
            }
        }
    }
    if (L->threads && !L->abort && L->running == 0 && L->live > 0) deadlock();
    unlock();
}

/* ---- fibers ---- */

void fiber_main() {
    const unsigned me = current();
    L->fn(L->fn_ctx);
    thread_exit(me);
    fiber_switch(&L->fctx[me], &L->sched);  // for the last time: a finished fiber is never resumed
    abort();
}

bool ensure_stacks(unsigned n) {
    if (g_stack_count >= n) return true;
    if (g_stacks) munmap(g_stacks, g_stack_count * (kFiberStack + kPage));
    g_stack_count = 0;
    const size_t bytes = (size_t)n * (kFiberStack + kPage);
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        g_stacks = nullptr;
        return false;
    }
    g_stacks = static_cast<unsigned char*>(m);
    for (unsigned i = 0; i < n; i++) {
        // lowest page of each stack is a guard: an overflow faults instead of corrupting the neighbour
        mprotect(g_stacks + (size_t)i * (kFiberStack + kPage), kPage, PROT_NONE);
    }
    g_stack_count = n;
    return true;
}

void run_block_fibers() {
    for (unsigned i = 0; i < L->n; i++) {
        fiber_make(&L->fctx[i], g_stacks + (size_t)i * (kFiberStack + kPage) + kPage, kFiberStack, fiber_main);
    }
    for (;;) {
        bool any = false;
        for (unsigned k = 0; k < L->n; k++) {
            const unsigned i = L->reverse ? L->n - 1 - k : k;
            if (L->st[i] != READY) continue;
            any = true;
            t_cur = &L->ctx[i];
            fiber_switch(&L->sched, &L->fctx[i]);
            if (L->abort) {
                t_cur = nullptr;
                return;
            }
        }
        t_cur = nullptr;
        if (L->live == 0) return;
        if (!any) {
            deadlock();
            return;
        }
    }
}

/* ---- threads ---- */

struct Worker {
    unsigned idx;
};

void* worker_main(void* arg) {
    const unsigned me = static_cast<Worker*>(arg)->idx;
    fault_prepare_thread();
    volatile unsigned long seen = 0;  // volatile: survives the longjmp back into this frame
    for (;;) {
        mu_lock(&L->mu);
        while (L->gen == seen && !L->quit) pthread_cond_wait(&L->start_cv, &L->mu);
        if (L->quit) {
            mu_unlock(&L->mu);
            return nullptr;
        }
        seen = L->gen;
        mu_unlock(&L->mu);
        HB_ACQUIRE(&L->gen);  // block start: everything the launcher did before happens before this thread
        t_cur = &L->ctx[me];
        sigjmp_buf fjb;
        if (sigsetjmp(fjb, 1) == 0) {
            fault_arm(&fjb);
            if (setjmp(L->jb[me]) == 0) {
                L->fn(L->fn_ctx);
                fault_disarm();
                thread_exit(me);
            }
            // (after longjmp the lock is released already)
            fault_disarm();
        } else {
            // a device fault in this thread's kernel code (which holds no emulator lock there)
            mu_lock(&L->mu);
            record_fault(fault_last());
            mu_unlock(&L->mu);
        }
        HB_RELEASE(&L->finished);  // block end: this thread's work happens before the launcher continues
        mu_lock(&L->mu);
        L->finished++;
        if (L->finished == L->n) pthread_cond_signal(&L->done_cv);
        mu_unlock(&L->mu);
    }
}

void poison_shared() {
    unsigned char* const begin = __start_lmas_emu_shared;
    unsigned char* const end = __stop_lmas_emu_shared;
    if (begin && end && end > begin) memset(begin, 0xFF, (size_t)(end - begin));
    if (L->dyn) memset(L->dyn, 0xFF, L->dyn_bytes + kGuardBytes);
}

bool guard_intact() {
    if (!L->dyn) return true;
    for (size_t i = 0; i < kGuardBytes; i++) {
        if (L->dyn[L->dyn_bytes + i] != 0xFF) return false;
    }
    return true;
}

void reset_block_state(uint3 b) {
    L->block = b;
    for (unsigned i = 0; i < L->n; i++) {
        L->ctx[i].block_idx = b;
        L->st[i] = READY;
        L->site_file[i] = "";
        L->site_line[i] = 0;
    }
    memset(L->groups, 0, sizeof(Group) * L->nwarps * 32);
    L->live = L->n;
    L->running = L->n;
    L->bar_count = 0;
    L->bar_seq = 0;
    L->finished = 0;
}

int mode_from_env() {
    const char* m = getenv("LATENTMAS_EMU_MODE");
    if (m && strcmp(m, "threads") == 0) return LMAS_EMU_MODE_THREADS;
    if (m && strcmp(m, "fibers") == 0) return LMAS_EMU_MODE_FIBERS;
#if LMAS_EMU_TSAN
    return LMAS_EMU_MODE_THREADS;
#else
    return LMAS_EMU_MODE_FIBERS;
#endif
}

void* xcalloc(size_t n, size_t size) { return calloc(n ? n : 1, size); }

}  // namespace

/* ---- entry points used by emu.h ---- */

void syncthreads(const char* file, unsigned line) {
    // The phase cannot complete before this thread arrives, so it is stable here; release before arriving
    // (TSan ignores annotations made while the emulator's lock is held).
    const unsigned phase = __atomic_load_n(&L->bar_seq, __ATOMIC_RELAXED);
    HB_RELEASE(&L->bar_sync[phase & 1]);
    lock();
    const unsigned me = current();
    if (L->abort) leave(me);
    if (L->live < L->n) {
        unsigned gone = 0;
        for (unsigned i = 0; i < L->n; i++) {
            if (L->st[i] == DONE) {
                gone = i;
                break;
            }
        }
        record(LMAS_EMU_BARRIER_DIVERGENCE,
               "thread %u reached __syncthreads (%s:%u) after thread %u had exited; every thread of a block must "
               "reach each barrier",
               me, base_name(file), line, gone);
        leave(me);
    }
    if (L->bar_count == 0) {
        L->bar_file = file;
        L->bar_line = line;
    } else if (L->bar_line != line || strcmp(L->bar_file, file) != 0) {
        record(LMAS_EMU_BARRIER_DIVERGENCE,
               "divergent __syncthreads: thread %u arrived at %s:%u while %u thread(s) wait at %s:%u", me,
               base_name(file), line, L->bar_count, base_name(L->bar_file), L->bar_line);
        leave(me);
    }
    L->st[me] = AT_BARRIER;
    L->site_file[me] = file;
    L->site_line[me] = line;
    L->bar_count++;
    if (L->bar_count == L->live) {
        L->bar_count = 0;
        __atomic_store_n(&L->bar_seq, L->bar_seq + 1, __ATOMIC_RELAXED);
        for (unsigned i = 0; i < L->n; i++) {
            if (L->st[i] == AT_BARRIER && i != me) release(i);
        }
        L->st[me] = READY;
        unlock();
        HB_ACQUIRE(&L->bar_sync[phase & 1]);
        return;
    }
    wait_released(me);
    unlock();
    HB_ACQUIRE(&L->bar_sync[phase & 1]);
}

/* __syncwarp orders memory among its lanes: each lane releases on its own address (alternating with its
 * syncwarp count, so a lane that has already moved on to its next __syncwarp does not leak later writes into
 * this one) and, once the group completes, acquires the addresses its fellow lanes released on. */
void syncwarp_acquire(unsigned wbase, unsigned mask, unsigned parbits) {
    for (unsigned l = 0; l < 32; l++) {
        if (mask >> l & 1u) HB_ACQUIRE(&L->lane_sync[(wbase + l) * 2 + (parbits >> l & 1u)]);
    }
}

uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width, const char* file, unsigned line) {
    unsigned par = 0;
    if (op == OP_SYNCWARP && L->threads) {
        const unsigned self = current();
        par = L->wsync[self] & 1u;  // only this thread touches its own counter
        L->wsync[self]++;
        HB_RELEASE(&L->lane_sync[self * 2 + par]);
    }
    lock();
    const unsigned me = current();
    if (L->abort) leave(me);
    const unsigned lane = me % 32, w = me / 32, wbase = w * 32;
    const unsigned wn = L->n - wbase < 32 ? L->n - wbase : 32;
    const unsigned exists = wn == 32 ? 0xffffffffu : ((1u << wn) - 1u);
    const char* f = base_name(file);
    if (!(mask >> lane & 1u)) {
        record(LMAS_EMU_BAD_WARP_SYNC, "lane %u of warp %u calls %s (%s:%u) with mask 0x%08x, which does not name it",
               lane, w, op_name(op), f, line, mask);
        leave(me);
    }
    if (mask & ~exists) {
        record(LMAS_EMU_BAD_WARP_SYNC,
               "%s (%s:%u) mask 0x%08x names lanes that do not exist: warp %u has %u thread(s) (block of %u)",
               op_name(op), f, line, mask, w, wn, L->n);
        leave(me);
    }
    for (unsigned l = 0; l < 32; l++) {
        if ((mask >> l & 1u) && L->st[wbase + l] == DONE) {
            record(LMAS_EMU_BAD_WARP_SYNC, "%s (%s:%u) mask 0x%08x names lane %u of warp %u, which has exited",
                   op_name(op), f, line, mask, l, w);
            leave(me);
        }
    }
    if (op <= OP_SHFL_UP && (width <= 0 || width > 32 || (width & (width - 1)) != 0)) {
        record(LMAS_EMU_BAD_WARP_SYNC, "%s (%s:%u): width %d is not a power of two in [1, 32]", op_name(op), f, line,
               width);
        leave(me);
    }
    Group* gs = &L->groups[w * 32];
    Group* g = nullptr;
    for (unsigned i = 0; i < 32; i++) {
        if (gs[i].used && (gs[i].mask & mask)) {
            g = &gs[i];
            break;
        }
    }
    if (g && g->mask != mask) {
        record(LMAS_EMU_BAD_WARP_SYNC,
               "lane %u of warp %u calls %s (%s:%u) with mask 0x%08x while lanes 0x%08x wait at %s (%s:%u) with mask "
               "0x%08x",
               lane, w, op_name(op), f, line, mask, g->arrived, op_name(g->op), base_name(g->file), g->line, g->mask);
        leave(me);
    }
    if (g && (g->op != op || g->width != width)) {
        record(LMAS_EMU_BAD_WARP_SYNC,
               "lanes of mask 0x%08x (warp %u) meet at different warp intrinsics: lane %u at %s width %d (%s:%u), "
               "lanes 0x%08x at %s width %d (%s:%u)",
               mask, w, lane, op_name(op), width, f, line, g->arrived, op_name(g->op), g->width, base_name(g->file),
               g->line);
        leave(me);
    }
    if (!g) {
        for (unsigned i = 0; i < 32; i++) {
            if (!gs[i].used) {
                g = &gs[i];
                break;
            }
        }
        *g = Group{mask, 0, op, width, file, line, true};
    }
    L->val_in[me] = value;
    L->arg[me] = arg;
    L->arr_par[me] = par;
    g->arrived |= 1u << lane;
    if (g->arrived == mask) {
        // complete: compute every participant's result
        unsigned ballot = 0;
        for (unsigned l = 0; l < 32; l++) {
            if ((mask >> l & 1u) && L->val_in[wbase + l] != 0) ballot |= 1u << l;
        }
        for (unsigned l = 0; l < 32; l++) {
            if (!(mask >> l & 1u)) continue;
            const unsigned t = wbase + l;
            uint64_t out = 0;
            if (op <= OP_SHFL_UP) {
                const int a = L->arg[t];
                const unsigned seg = l & ~(unsigned)(width - 1);
                int src = (int)l;
                if (op == OP_SHFL_IDX) {
                    src = (int)seg + (int)((unsigned)a % (unsigned)width);
                } else if (op == OP_SHFL_XOR) {
                    src = (int)(l ^ (unsigned)a);
                    if (src >= (int)(seg + (unsigned)width)) src = (int)l;  // later segment: own value (CUDA docs)
                } else if (op == OP_SHFL_DOWN) {
                    src = (int)l + a;
                    if (src >= (int)(seg + (unsigned)width)) src = (int)l;
                } else {
                    src = (int)l - a;
                    if (src < (int)seg) src = (int)l;
                }
                if (src < 0 || src > 31 || !(mask >> src & 1u)) {
                    record(LMAS_EMU_BAD_WARP_SYNC,
                           "%s (%s:%u) mask 0x%08x: lane %u reads lane %d, which is not in the mask (undefined on a "
                           "GPU)",
                           op_name(op), f, line, mask, l, src);
                    leave(me);
                }
                out = L->val_in[wbase + (unsigned)src];
            } else if (op == OP_BALLOT) {
                out = ballot;
            } else if (op == OP_ANY) {
                out = ballot != 0;
            } else if (op == OP_ALL) {
                out = ballot == mask;
            }
            L->val_out[t] = out;
        }
        unsigned parbits = 0;
        for (unsigned l = 0; l < 32; l++) {
            if (mask >> l & 1u) parbits |= (L->arr_par[wbase + l] & 1u) << l;
        }
        g->used = false;
        for (unsigned l = 0; l < 32; l++) {
            const unsigned t = wbase + l;
            if (!(mask >> l & 1u)) continue;
            L->par_out[t] = parbits;
            if (t != me) release(t);
        }
        const uint64_t r = L->val_out[me];
        unlock();
        if (op == OP_SYNCWARP && L->threads) syncwarp_acquire(wbase, mask, parbits);
        return r;
    }
    L->st[me] = AT_WARP;
    L->site_file[me] = file;
    L->site_line[me] = line;
    L->site_op[me] = op;
    wait_released(me);
    const uint64_t r = L->val_out[me];
    const unsigned parbits = L->par_out[me];
    unlock();
    if (op == OP_SYNCWARP && L->threads) syncwarp_acquire(wbase, mask, parbits);
    return r;
}

void* dyn_shared() { return L->dyn; }

void trap(const char* file, unsigned line, const char* what) {
    lock();
    const unsigned me = current();
    record(LMAS_EMU_TRAP, "thread %u: %s at %s:%u", me, what, base_name(file), line);
    leave(me);
}

void clear_error(LmasEmuError* err) {
    err->code = LMAS_EMU_OK;
    err->message[0] = '\0';
}

int plan_error(const char* op, const LmasPlan& plan, LmasEmuError* err) {
    err->code = LMAS_EMU_INVALID_PLAN;
    snprintf(err->message, sizeof err->message, "%s: %s", op, plan.error);
    return err->code;
}

int unknown_kernel(const char* op, const char* kernel, LmasEmuError* err) {
    err->code = LMAS_EMU_INTERNAL;
    snprintf(err->message, sizeof err->message, "%s: the plan names kernel %s, which the op does not register", op,
             kernel ? kernel : "(null)");
    return err->code;
}

int params_size_mismatch(const char* kernel, size_t got, size_t want, LmasEmuError* err) {
    err->code = LMAS_EMU_PARAMS_SIZE;
    snprintf(err->message, sizeof err->message,
             "%s: launched with %zu bytes of parameters; its parameter struct has %zu", kernel, got, want);
    return err->code;
}

/* Every block of the launch, in order. */
void run_grid(const LmasLaunch& l) {
    for (uint32_t bz = 0; !L->abort && bz < l.grid[2]; bz++) {
        for (uint32_t by = 0; !L->abort && by < l.grid[1]; by++) {
            for (uint32_t bx = 0; !L->abort && bx < l.grid[0]; bx++) {
                if (L->threads) mu_lock(&L->mu);
                reset_block_state(make_uint3(bx, by, bz));
                poison_shared();
                if (L->threads) {
                    mu_unlock(&L->mu);
                    HB_RELEASE(&L->gen);
                    mu_lock(&L->mu);
                    L->gen++;
                    pthread_cond_broadcast(&L->start_cv);
                    while (L->finished < L->n) pthread_cond_wait(&L->done_cv, &L->mu);
                    mu_unlock(&L->mu);
                    HB_ACQUIRE(&L->finished);
                } else {
                    run_block_fibers();
                }
                if (!L->abort && !guard_intact()) {
                    record(LMAS_EMU_SHARED_OVERFLOW,
                           "a thread wrote past the end of the %u bytes of dynamic shared memory", l.shared_bytes);
                }
            }
        }
    }
}

/* run_grid, with device faults of kernel code on this thread (fibers mode: all of it) turned into the
 * launch's error. The jump lands here, on this thread's own stack; the launch's fibers are abandoned where they
 * stopped (kernels own no resources, and the next block or launch re-initialises every fiber stack). */
void run_grid_guarded(const LmasLaunch& l) {
    fault_prepare_thread();
    sigjmp_buf jb;
    if (sigsetjmp(jb, 1) == 0) {
        fault_arm(&jb);
        run_grid(l);
        fault_disarm();
        return;
    }
    t_cur = nullptr;
    record_fault(fault_last());
}

int launch(const LmasLaunch& l, void (*fn)(void*), void* fn_ctx, const LmasEmuOptions* opts, LmasEmuError* err,
           uint32_t max_dyn_shared) {
    clear_error(err);
    const unsigned n = l.block[0] * l.block[1] * l.block[2];
    const uint64_t blocks = (uint64_t)l.grid[0] * l.grid[1] * l.grid[2];
    if (n == 0 || n > 1024 || l.block[2] > 64 || blocks == 0 || l.grid[1] > 65535 || l.grid[2] > 65535 ||
        l.grid[0] > 0x7fffffffu || l.shared_bytes > max_dyn_shared) {
        err->code = LMAS_EMU_BAD_LAUNCH;
        snprintf(err->message, sizeof err->message,
                 "%s: launch a GPU refuses: grid (%u,%u,%u), block (%u,%u,%u), %u bytes of dynamic shared memory "
                 "(limits: 1..1024 threads, grid.y/z <= 65535, <= %u bytes granted)",
                 l.kernel, l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2], l.shared_bytes,
                 max_dyn_shared);
        return err->code;
    }
    int mode = opts && opts->mode != LMAS_EMU_MODE_AUTO ? (int)opts->mode : mode_from_env();
#if LMAS_EMU_TSAN
    mode = LMAS_EMU_MODE_THREADS;  // TSan does not follow fiber stack switches
#endif
    err->mode_used = (uint32_t)mode;

    pthread_mutex_lock(&g_launch_mu);
    Launch st;
    memset(&st, 0, sizeof st);
    L = &st;
    st.kernel = l.kernel;
    st.threads = mode == LMAS_EMU_MODE_THREADS;
    st.reverse = opts && opts->schedule == LMAS_EMU_SCHEDULE_REVERSE;
    st.n = n;
    st.nwarps = (n + 31) / 32;
    st.fn = fn;
    st.fn_ctx = fn_ctx;
    st.err = err;
    st.dyn_bytes = l.shared_bytes;
    g_block_dim = make_uint3(l.block[0], l.block[1], l.block[2]);
    g_grid_dim = make_uint3(l.grid[0], l.grid[1], l.grid[2]);

    st.ctx = static_cast<ThreadCtx*>(xcalloc(n, sizeof(ThreadCtx)));
    st.st = static_cast<St*>(xcalloc(n, sizeof(St)));
    st.site_file = static_cast<const char**>(xcalloc(n, sizeof(char*)));
    st.site_line = static_cast<unsigned*>(xcalloc(n, sizeof(unsigned)));
    st.site_op = static_cast<int*>(xcalloc(n, sizeof(int)));
    st.val_in = static_cast<uint64_t*>(xcalloc(n, sizeof(uint64_t)));
    st.val_out = static_cast<uint64_t*>(xcalloc(n, sizeof(uint64_t)));
    st.arg = static_cast<int*>(xcalloc(n, sizeof(int)));
    st.groups = static_cast<Group*>(xcalloc((size_t)st.nwarps * 32, sizeof(Group)));
    st.par_out = static_cast<unsigned*>(xcalloc(n, sizeof(unsigned)));
    st.arr_par = static_cast<unsigned*>(xcalloc(n, sizeof(unsigned)));
    st.wsync = static_cast<unsigned*>(xcalloc(n, sizeof(unsigned)));
    st.lane_sync = static_cast<unsigned char*>(xcalloc(n, 2));
    // 16-byte aligned like CUDA's dynamic shared memory
    st.dyn = l.shared_bytes ? static_cast<unsigned char*>(aligned_alloc(16, (l.shared_bytes + kGuardBytes + 15) / 16 * 16))
                            : nullptr;
    bool ok = st.ctx && st.st && st.site_file && st.site_line && st.site_op && st.val_in && st.val_out && st.arg &&
              st.groups && st.par_out && st.arr_par && st.wsync && st.lane_sync && (l.shared_bytes == 0 || st.dyn);
    for (unsigned i = 0; ok && i < n; i++) {
        st.ctx[i].linear = i;
        st.ctx[i].thread_idx = make_uint3(i % l.block[0], (i / l.block[0]) % l.block[1], i / (l.block[0] * l.block[1]));
    }
#if LMAS_EMU_TSAN
    const int reports_before = __atomic_load_n(&g_tsan_reports, __ATOMIC_SEQ_CST);
#endif
    pthread_t* tids = nullptr;
    Worker* workers = nullptr;
    unsigned started = 0;
    if (ok && !st.threads) {
        st.fctx = static_cast<FiberCtx*>(xcalloc(n, sizeof(FiberCtx)));
        ok = st.fctx && ensure_stacks(n);
    }
    if (ok && st.threads) {
        pthread_mutex_init(&st.mu, nullptr);
        st.tcv = static_cast<pthread_cond_t*>(xcalloc(n, sizeof(pthread_cond_t)));
        for (unsigned i = 0; st.tcv && i < n; i++) pthread_cond_init(&st.tcv[i], nullptr);
        pthread_cond_init(&st.start_cv, nullptr);
        pthread_cond_init(&st.done_cv, nullptr);
        st.jb = static_cast<jmp_buf*>(xcalloc(n, sizeof(jmp_buf)));
        tids = static_cast<pthread_t*>(xcalloc(n, sizeof(pthread_t)));
        workers = static_cast<Worker*>(xcalloc(n, sizeof(Worker)));
        ok = st.tcv && st.jb && tids && workers;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 512 * 1024);
        for (unsigned i = 0; ok && i < n; i++) {
            workers[i].idx = i;
            if (pthread_create(&tids[i], &attr, worker_main, &workers[i]) != 0) {
                ok = false;
                break;
            }
            started++;
        }
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        err->code = LMAS_EMU_INTERNAL;
        snprintf(err->message, sizeof err->message, "%s: the emulator could not allocate %u threads/fibers",
                 l.kernel, n);
        st.abort = true;
    }

    if (ok && !st.abort) run_grid_guarded(l);

    if (st.threads && started > 0) {
        mu_lock(&st.mu);
        st.quit = true;
        pthread_cond_broadcast(&st.start_cv);
        mu_unlock(&st.mu);
        for (unsigned i = 0; i < started; i++) pthread_join(tids[i], nullptr);
    }
    if (st.threads) {
        for (unsigned i = 0; st.tcv && i < n; i++) pthread_cond_destroy(&st.tcv[i]);
        free(st.tcv);
        pthread_cond_destroy(&st.start_cv);
        pthread_cond_destroy(&st.done_cv);
        pthread_mutex_destroy(&st.mu);
    }
#if LMAS_EMU_TSAN
    const int races = __atomic_load_n(&g_tsan_reports, __ATOMIC_SEQ_CST) - reports_before;
    if (races > 0 && err->code == LMAS_EMU_OK) {
        err->code = LMAS_EMU_DATA_RACE;
        snprintf(err->message, sizeof err->message,
                 "%s: ThreadSanitizer reported %d data race(s) during the launch (the reports are on stderr)",
                 l.kernel, races);
    }
#endif
    free(st.ctx);
    free(st.st);
    free(st.site_file);
    free(st.site_line);
    free(st.site_op);
    free(st.val_in);
    free(st.val_out);
    free(st.arg);
    free(st.groups);
    free(st.par_out);
    free(st.arr_par);
    free(st.wsync);
    free(st.lane_sync);
    free(st.dyn);
    free(st.fctx);
    free(st.jb);
    free(tids);
    free(workers);
    t_fault_addr = st.fault_addr;
    L = nullptr;
    const int code = err->code;
    pthread_mutex_unlock(&g_launch_mu);
    return code;
}

}  // namespace lmas_emu

extern "C" uint32_t lmas_emu_build_flags(void) {
    uint32_t f = 0;
#if LMAS_EMU_TSAN
    f |= 1u;
#endif
#if LMAS_EMU_HAVE_CUDA_BF16
    f |= 2u;
#endif
    return f;
}

extern "C" uintptr_t lmas_emu_fault_address(void) { return lmas_emu::t_fault_addr; }

extern "C" int lmas_emu_launch_named(const char* kernel, const LmasLaunch* l, const void* params, size_t params_bytes,
                                     uint32_t max_dyn_shared, const LmasEmuOptions* o, LmasEmuError* e) {
    lmas_emu::clear_error(e);
    if (__start_lmas_emu_ops != nullptr) {
        for (const lmas_emu::OpEntry* op = __start_lmas_emu_ops; op < __stop_lmas_emu_ops; op++) {
            const int rc = op->run(kernel, *l, params, params_bytes, max_dyn_shared, o, e);
            if (rc >= 0) {
                return rc;
            }
        }
    }
    e->code = LMAS_EMU_UNKNOWN_KERNEL;
    snprintf(e->message, sizeof e->message, "kernel %s is not in the host emulator", kernel ? kernel : "(null)");
    return e->code;
}
