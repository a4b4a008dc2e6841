//! The hand-written CUDA kernels, from the `latentmas-kernels` crate (crates/kernels: the `.cu` sources,
//! their params structs and launch planners, the fatbin nvcc built, the host emulator, the `ptxas` report),
//! with its errors as the engine's: a planner's refusal is [`Error::InvalidArgument`], a missing fatbin or
//! an emulated launch's failure [`Error::Device`].

pub use latentmas_kernels::*;

use crate::error::{Error, Result};

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::NotBuilt(m) => Error::Device(m),
            KernelError::InvalidParams(m) => Error::InvalidArgument(m),
        }
    }
}

#[cfg(feature = "emu")]
impl From<emu::EmuError> for Error {
    fn from(e: emu::EmuError) -> Self {
        Error::Device(format!("kernel emulation: {e}"))
    }
}

/// The kernels' module image for `cuModuleLoadData`: SASS for sm_90a and sm_80, PTX for compute_90.
/// Fails with a message saying how to get it when the kernels were built without nvcc.
pub fn fatbin() -> Result<&'static [u8]> {
    Ok(latentmas_kernels::fatbin()?)
}
