//! `latentmas-ffi-flags`: the compiler and linker flags of a C program that uses the C ABI (`ffi/latentmas.h`),
//! pkg-config style: `cc prog.c $(latentmas-ffi-flags) -o prog`. Built next to the libraries, so by default
//! it points at the liblatentmas.a / .so of its own target directory.
//!
//! Arguments: `--cflags` (only `-I…`), `--libs` (only the linker flags), `--shared` (`-llatentmas` with an rpath
//! instead of the static library), `--lib-dir DIR`, `--include-dir DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "../abi.rs"]
mod abi;

use abi::NATIVE_STATIC_LIBS;

/// The header's directory in the checkout this binary was built from.
const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ffi");

const USAGE: &str = "usage: latentmas-ffi-flags [--cflags | --libs] [--shared] [--lib-dir DIR] [--include-dir DIR]";

#[derive(Default)]
struct Args {
    cflags: bool,
    libs: bool,
    shared: bool,
    lib_dir: Option<PathBuf>,
    include_dir: Option<PathBuf>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().map(PathBuf::from).ok_or_else(|| format!("{name} needs a directory"));
        match arg.as_str() {
            "--cflags" => a.cflags = true,
            "--libs" => a.libs = true,
            "--shared" => a.shared = true,
            "--lib-dir" => a.lib_dir = Some(value("--lib-dir")?),
            "--include-dir" => a.include_dir = Some(value("--include-dir")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.cflags && a.libs {
        return Err("--cflags and --libs exclude each other (give neither for both)".into());
    }
    Ok(a)
}

/// The flags for these arguments: (cflags, libs).
fn flags(a: &Args, lib_dir: &Path, include_dir: &Path) -> (String, String) {
    let cflags = format!("-I{}", include_dir.display());
    let libs = if a.shared {
        format!("-L{0} -llatentmas -Wl,-rpath,{0}", lib_dir.display())
    } else {
        format!("{} {}", lib_dir.join("liblatentmas.a").display(), NATIVE_STATIC_LIBS.join(" "))
    };
    (cflags, libs)
}

fn main() -> ExitCode {
    let a = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("latentmas-ffi-flags: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let lib_dir = a.lib_dir.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent().map(Path::to_path_buf).unwrap_or_default()
    });
    let include_dir = a.include_dir.clone().unwrap_or_else(|| PathBuf::from(INCLUDE_DIR));
    // Warnings go to stderr so `$(latentmas-ffi-flags)` stays usable.
    let lib = lib_dir.join(if a.shared { "liblatentmas.so" } else { "liblatentmas.a" });
    if !lib.exists() {
        eprintln!(
            "warning: {} does not exist; build it with `cargo build --release -p latentmas-capi` or pass --lib-dir",
            lib.display()
        );
    }
    if !include_dir.join("latentmas.h").exists() {
        eprintln!("warning: {}/latentmas.h does not exist; pass --include-dir", include_dir.display());
    }
    let (cflags, libs) = flags(&a, &lib_dir, &include_dir);
    match (a.cflags, a.libs) {
        (true, _) => println!("{cflags}"),
        (_, true) => println!("{libs}"),
        _ => println!("{cflags} {libs}"),
    }
    ExitCode::SUCCESS
}
