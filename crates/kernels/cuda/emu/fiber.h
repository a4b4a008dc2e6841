/*
 * Fiber context switch of the emulator's fiber mode: each CUDA thread of a block runs on its own stack, and
 * the scheduler on the launching thread switches to it and back at every barrier and warp rendezvous.
 *
 * Why not swapcontext: glibc's getcontext/swapcontext save and restore the signal mask with a system call on
 * every switch, and a block of 256 threads meets a barrier many times per kernel: the switches were over half
 * of the emulator's time. A switch here saves only what the calling convention asks a callee to keep (the
 * callee-saved registers, the stack pointer, and the floating-point control words), on the stack being left.
 * Other architectures keep ucontext (correct, slower).
 *
 * Included once, by emu.cpp.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#define LMAS_EMU_FAST_FIBERS 1

/* A suspended fiber: its stack pointer; everything else is on its stack. */
struct FiberCtx {
    void* sp;
};

extern "C" void lmas_emu_fiber_switch(FiberCtx* from, FiberCtx* to);

/* System V x86-64: rbp, rbx, r12-r15 are callee-saved; MXCSR's control bits and the x87 control word too. */
asm(R"(
    .text
    .p2align 4
    .globl lmas_emu_fiber_switch
    .hidden lmas_emu_fiber_switch
    .type lmas_emu_fiber_switch, @function
lmas_emu_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lmas_emu_fiber_switch, .-lmas_emu_fiber_switch
)");

/* Prepares `c` so that the first switch to it calls `entry()` on the stack [stack, stack + size). `entry`
 * must never return (it switches away for the last time instead). */
inline void fiber_make(FiberCtx* c, void* stack, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    *--s = 0;                                 // entry's return address slot: entry starts as if called
    *--s = (uint64_t)(uintptr_t)entry;        // popped by the switch's ret
    for (int i = 0; i < 6; i++) *--s = 0;     // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    *--s = (uint64_t)mxcsr | (uint64_t)fpcw << 32;  // the launching thread's rounding modes and masks
    c->sp = s;
}

inline void fiber_switch(FiberCtx* from, FiberCtx* to) { lmas_emu_fiber_switch(from, to); }

#else
#include <ucontext.h>
#define LMAS_EMU_FAST_FIBERS 0

struct FiberCtx {
    ucontext_t uc;
};

inline void fiber_make(FiberCtx* c, void* stack, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;  // entry never returns
    makecontext(&c->uc, entry, 0);
}

inline void fiber_switch(FiberCtx* from, FiberCtx* to) { swapcontext(&from->uc, &to->uc); }
#endif
