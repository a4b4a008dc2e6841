//! An emulated CUDA driver and cuBLAS for machines without a GPU: one shared library that serves as both
//! `libcuda.so` and `libcublas.so` (the same file under both names, so the dynamic loader maps it once and
//! cuBLAS shares the driver's memory and streams). Put its directory first on `LD_LIBRARY_PATH`
//! (`tools/cuda_emu.sh` builds it and prints that directory) and a program that loads the driver at run
//! time — cudarc's dynamic loading — runs its CUDA path unchanged, its kernels executed by the host
//! emulator from the same `.cu` sources as the fatbin.
//!
//! The semantics follow the CUDA driver API and cuBLAS documentation: device 0 is an sm_90 GPU;
//! streams run asynchronously on their own workers and only as late as synchronisation allows
//! (`stream`); the legacy stream's implicit synchronisation applies to blocking streams only; stream capture
//! refuses what CUDA refuses and invalidates the capture (`state`); launches are checked against the
//! hardware's limits and the cubin's parameter table (`driver`, `module`); device memory is poisoned,
//! 256-byte aligned, never reused, and checked on every use (`memory`); a fault is sticky (`fault`).
//! Only the entry points listed in `driver` and `blas` exist: cudarc resolves each symbol when it is
//! first called, so a program needs exactly the ones it calls.
//!
//! The exported functions are the CUDA C API: their safety contracts are CUDA's own.
#![allow(clippy::missing_safety_doc)]

mod abi;
pub mod blas;
pub mod driver;
mod fault;
mod kernel;
mod memory;
pub mod module;
mod state;
mod stream;

#[cfg(test)]
mod blas_tests;
#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod testing;
