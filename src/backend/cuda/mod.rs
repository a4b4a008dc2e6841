//! The cuda device. So far: the probe that tells whether a CUDA driver, a device and the kernels are usable,
//! without ever panicking on a machine without a driver. The forward itself is not implemented yet; see
//! docs/CUDA_BACKEND.md ("Next steps") for the exact plan (`CudaModel` mirrors `backend::emu::EmuModel`).
//!
//! Operations: [`probe`].

use crate::error::{Error, Result};

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// Device 0's name (`cuDeviceGetName`).
    pub name: String,
    /// Devices the driver reports.
    pub devices: usize,
}

/// The one-line error for a machine without a usable driver or device.
fn no_device(why: impl std::fmt::Debug) -> Error {
    Error::Device(format!("no CUDA driver/device found ({why:?})"))
}

/// Checks, in order: libcuda can be loaded (`is_culib_present`, BEFORE any driver call: cudarc's
/// dynamically loaded entry points panic without the library), the driver initialises and reports a device,
/// a context on device 0 can be created, and this build embeds the kernels' fatbin.
pub fn probe() -> Result<CudaInfo> {
    // SAFETY: only tries to dlopen the driver library by its usual names; no symbol is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(no_device(format_args!("libcuda could not be loaded")));
    }
    let devices = cudarc::driver::CudaContext::device_count().map_err(no_device)?;
    if devices <= 0 {
        return Err(no_device(format_args!("the driver reports no device")));
    }
    let ctx = cudarc::driver::CudaContext::new(0).map_err(no_device)?;
    let name = ctx.name().map_err(no_device)?;
    crate::kernels::fatbin()?;
    Ok(CudaInfo { name, devices: devices as usize })
}
