//! A kernel launch as the stream runs it: the host emulator (`crates/kernels/cuda/emu/`, the same `.cu` sources as the
//! fatbin) runs the kernel found by its symbol name, with the parameter bytes the driver assembled from
//! `cuLaunchKernel`'s arguments exactly as received.

use std::ffi::{c_char, c_void, CStr, CString};

use crate::abi::*;

#[repr(C)]
struct LmasLaunch {
    kernel: *const c_char,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    _pad: u32,
}

#[repr(C)]
struct LmasEmuOptions {
    mode: u32,
    schedule: u32,
}

const MESSAGE_LEN: usize = 2048;

#[repr(C)]
struct LmasEmuError {
    code: i32,
    mode_used: u32,
    message: [c_char; MESSAGE_LEN],
}

/// The emulator's codes that are not a kernel's own failure.
const LMAS_EMU_UNKNOWN_KERNEL: i32 = 10;
const LMAS_EMU_PARAMS_SIZE: i32 = 11;
const LMAS_EMU_ILLEGAL_ADDRESS: i32 = 12;

extern "C" {
    fn lmas_emu_launch_named(
        kernel: *const c_char,
        launch: *const LmasLaunch,
        params: *const c_void,
        params_bytes: usize,
        max_dyn_shared: u32,
        opts: *const LmasEmuOptions,
        err: *mut LmasEmuError,
    ) -> i32;
    fn lmas_emu_fault_address() -> usize;
}

/// One queued launch.
pub struct KernelCall {
    pub name: CString,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// The dynamic shared memory the function may use (48 KiB unless raised by cuFuncSetAttribute).
    pub max_dyn_shared: u32,
    /// The parameter buffer, laid out as the cubin's parameter table says.
    pub params: Vec<u8>,
}

impl KernelCall {
    pub fn describe(&self) -> String {
        format!(
            "{} grid ({},{},{}) block ({},{},{}) {} B dynamic shared memory",
            self.name.to_string_lossy(),
            self.grid[0],
            self.grid[1],
            self.grid[2],
            self.block[0],
            self.block[1],
            self.block[2],
            self.shared_bytes
        )
    }

    pub fn run(&self) -> Result<(), (CuResult, String)> {
        // A parameter holding an address inside freed device memory: the kernel would use a stale pointer.
        for (i, w) in self.params.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes")) as usize;
            if let Some(base) = crate::memory::freed_base(v) {
                return Err((
                    CUDA_ERROR_ILLEGAL_ADDRESS,
                    format!(
                        "kernel {}: parameter bytes [{}, {}) hold {v:#x}, inside the freed allocation at {base:#x}",
                        self.describe(),
                        8 * i,
                        8 * i + 8
                    ),
                ));
            }
        }
        let l = LmasLaunch {
            kernel: self.name.as_ptr(),
            grid: self.grid,
            block: self.block,
            shared_bytes: self.shared_bytes,
            _pad: 0,
        };
        let opts = LmasEmuOptions { mode: 0, schedule: 0 };
        let mut err = LmasEmuError { code: 0, mode_used: 0, message: [0; MESSAGE_LEN] };
        // SAFETY: every pointer is valid for the call; the kernel's device pointers are this process's
        // device memory (the driver's own mapping), which the emulated kernel accesses directly.
        let rc = unsafe {
            lmas_emu_launch_named(
                self.name.as_ptr(),
                &l,
                self.params.as_ptr() as *const c_void,
                self.params.len(),
                self.max_dyn_shared,
                &opts,
                &mut err,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the emulator NUL-terminates its message.
        let mut msg = unsafe { CStr::from_ptr(err.message.as_ptr()) }.to_string_lossy().into_owned();
        if rc == LMAS_EMU_ILLEGAL_ADDRESS {
            // SAFETY: no arguments; reads the calling thread's record of the launch that just ended.
            let addr = unsafe { lmas_emu_fault_address() };
            msg.push_str(&format!(" (the address is {})", crate::memory::describe(addr)));
        }
        let code = match rc {
            LMAS_EMU_ILLEGAL_ADDRESS => CUDA_ERROR_ILLEGAL_ADDRESS,
            LMAS_EMU_UNKNOWN_KERNEL => CUDA_ERROR_NOT_SUPPORTED,
            LMAS_EMU_PARAMS_SIZE => CUDA_ERROR_INVALID_VALUE,
            _ => CUDA_ERROR_LAUNCH_FAILED,
        };
        Err((code, format!("kernel {}: {msg}", self.describe())))
    }
}
