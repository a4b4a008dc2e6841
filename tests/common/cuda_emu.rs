//! Puts the emulated CUDA driver (cuda-emu/, built by tools/cuda_emu.sh) in front of the dynamic loader for
//! this test binary when `LATENTMAS_CUDA_EMU=<dir>` is set and no real driver can be loaded: before `main`,
//! the binary re-executes itself with `<dir>` first on `LD_LIBRARY_PATH` (the loader reads it only at
//! process start), so cudarc's ordinary loading — and every `latentmas` child the tests start — finds
//! the emulator. On a machine with a driver, or without the variable, nothing changes: the tests run on the
//! real GPU, or say they could not run.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;

/// Set in the re-executed process: the emulator's directory.
const ACTIVE: &str = "LATENTMAS_CUDA_EMU_ACTIVE";

#[used]
#[link_section = ".init_array"]
static ON_THE_EMULATED_DRIVER: extern "C" fn() = reexec_on_the_emulated_driver;

fn real_driver_loads() -> bool {
    // SAFETY: dlopen/dlclose of the driver by its soname; no symbol is used.
    unsafe {
        let h = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if h.is_null() {
            return false;
        }
        libc::dlclose(h);
        true
    }
}

extern "C" fn reexec_on_the_emulated_driver() {
    let Some(dir) = std::env::var_os("LATENTMAS_CUDA_EMU").filter(|d| !d.is_empty()) else { return };
    if std::env::var_os(ACTIVE).is_some() || real_driver_loads() {
        return;
    }
    let dir = std::path::PathBuf::from(dir);
    if !dir.join("libcuda.so.1").exists() {
        eprintln!("LATENTMAS_CUDA_EMU={}: no libcuda.so.1 there (run tools/cuda_emu.sh)", dir.display());
        return;
    }
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return };
    let mut args: Vec<OsString> =
        cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| OsString::from_vec(a.to_vec())).collect();
    if args.is_empty() {
        return;
    }
    let arg0 = args.remove(0);
    let mut path = dir.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("LD_LIBRARY_PATH", path)
        .env(ACTIVE, &dir)
        .exec();
    eprintln!("could not re-execute on the emulated CUDA driver: {err}");
}
