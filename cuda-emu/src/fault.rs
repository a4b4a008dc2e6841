//! The context's sticky error: the first fault of any stream (an emulated kernel that stopped, an access
//! outside live device memory). As on a GPU, the context is unusable afterwards: work is skipped and every
//! call returns the error. The message goes to stderr once, naming the operation.

use std::sync::Mutex;

use crate::abi::CuResult;

static FAULT: Mutex<Option<(CuResult, String)>> = Mutex::new(None);

pub fn get() -> Option<CuResult> {
    FAULT.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|f| f.0)
}

pub fn set(code: CuResult, msg: &str) {
    let mut f = FAULT.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        eprintln!("cuda-emu: device fault (error {code}): {msg}");
        *f = Some((code, msg.to_string()));
    }
}

/// A new context starts without a fault.
pub fn clear() {
    *FAULT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}
