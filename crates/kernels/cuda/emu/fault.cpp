/* crates/kernels/cuda/emu/fault.cpp: see fault.h. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "emu.h"
#include "fault.h"

namespace lmas_emu {

namespace {

/* Large enough for the handler itself, which only records and jumps. */
constexpr size_t kAltStack = 64 * 1024;

thread_local sigjmp_buf* t_jb = nullptr;
thread_local FaultInfo t_last = {0, 0, -1, -1};
thread_local bool t_alt_ready = false;

struct sigaction g_prev_segv;
struct sigaction g_prev_bus;
pthread_once_t g_once = PTHREAD_ONCE_INIT;
pthread_key_t g_alt_key;

int access_kind(void* uc) {
#if defined(__x86_64__) && defined(REG_ERR)
    /* Page-fault error code: bit 1 set for a write. */
    return (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
    (void)uc;
    return -1;
#endif
}

void on_fault(int sig, siginfo_t* si, void* uc) {
    sigjmp_buf* jb = t_jb;
    if (jb) {
        t_jb = nullptr;  // a second fault while leaving is not caught again
        t_last.addr = (uintptr_t)si->si_addr;
        t_last.sig = sig;
        t_last.write = access_kind(uc);
        t_last.thread = t_cur ? (int)t_cur->linear : -1;
        siglongjmp(*jb, 1);
    }
    /* Not a kernel's fault: the previous disposition decides, as if this handler were not there. */
    const struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, si, uc);
        return;
    }
    if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
        /* Returning re-executes the faulting access, which now takes the default action (the crash). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, nullptr);
        return;
    }
    prev->sa_handler(sig);
}

void free_alt_stack(void* mem) {
    stack_t off;
    memset(&off, 0, sizeof off);
    off.ss_flags = SS_DISABLE;
    sigaltstack(&off, nullptr);
    munmap(mem, kAltStack);
}

void install() {
    pthread_key_create(&g_alt_key, free_alt_stack);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
}

}  // namespace

void fault_prepare_thread() {
    pthread_once(&g_once, install);
    if (t_alt_ready) return;
    t_alt_ready = true;
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;  // the thread has one already
    void* mem = mmap(nullptr, kAltStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = mem;
    ss.ss_size = kAltStack;
    if (sigaltstack(&ss, nullptr) != 0) {
        munmap(mem, kAltStack);
        return;
    }
    pthread_setspecific(g_alt_key, mem);  // unmapped when the thread exits
}

void fault_arm(sigjmp_buf* jb) { t_jb = jb; }

void fault_disarm() { t_jb = nullptr; }

FaultInfo fault_last() { return t_last; }

}  // namespace lmas_emu
