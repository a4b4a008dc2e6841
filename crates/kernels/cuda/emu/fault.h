/*
 * Device faults of emulated kernels: a kernel that dereferences an address no allocation backs (never mapped,
 * freed, a guard page) gets SIGSEGV or SIGBUS from the host. While a thread runs kernel code it arms a jump
 * target; the handler (on an alternate signal stack, since the fault may be a fiber's stack overflow) then
 * jumps back to it, and the launch reports an illegal address instead of the process dying. A fault on a
 * thread that has nothing armed goes to whatever handled the signal before (by default: the crash).
 *
 * Included by emu.cpp; implemented in fault.cpp.
 */
#pragma once

#include <setjmp.h>
#include <stdint.h>

namespace lmas_emu {

struct FaultInfo {
    uintptr_t addr;
    int sig;
    int write;     /* 1 write, 0 read, -1 unknown */
    int thread;    /* linear CUDA thread index the handler saw current, -1 if none */
};

/* Installs the process-wide handlers (once) and this thread's alternate signal stack (once per thread). */
void fault_prepare_thread();

/* Arms / disarms the calling thread's jump target. `jb` must have been filled by sigsetjmp(jb, 1). */
void fault_arm(sigjmp_buf* jb);
void fault_disarm();

/* What the last fault jumped out of on this thread. */
FaultInfo fault_last();

}  // namespace lmas_emu
