//! `latentmas ffi-flags`: the compiler and linker flags of a C program that uses the C ABI (`ffi/latentmas.h`),
//! pkg-config style: `cc prog.c $(latentmas ffi-flags) -o prog`.

use std::path::{Path, PathBuf};

use latentmas::ffi::NATIVE_STATIC_LIBS;

/// The header's directory in the checkout this binary was built from.
const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ffi");

#[derive(clap::Args)]
pub struct Args {
    /// Print only the compiler flags (`-I…`).
    #[arg(long, conflicts_with = "libs")]
    pub cflags: bool,
    /// Print only the linker flags.
    #[arg(long)]
    pub libs: bool,
    /// Link the shared library (`-llatentmas` with an rpath) instead of the static `liblatentmas.a`.
    #[arg(long)]
    pub shared: bool,
    /// Directory holding liblatentmas.a / liblatentmas.so (default: this executable's, i.e. target/<profile>).
    #[arg(long)]
    pub lib_dir: Option<PathBuf>,
    /// Directory holding latentmas.h (default: ffi/ of the checkout this binary was built from).
    #[arg(long)]
    pub include_dir: Option<PathBuf>,
}

/// The flags for these arguments: (cflags, libs).
pub fn flags(a: &Args, lib_dir: &Path, include_dir: &Path) -> (String, String) {
    let cflags = format!("-I{}", include_dir.display());
    let libs = if a.shared {
        format!("-L{0} -llatentmas -Wl,-rpath,{0}", lib_dir.display())
    } else {
        format!("{} {}", lib_dir.join("liblatentmas.a").display(), NATIVE_STATIC_LIBS.join(" "))
    };
    (cflags, libs)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let lib_dir = match &a.lib_dir {
        Some(d) => d.clone(),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    };
    let include_dir = a.include_dir.clone().unwrap_or_else(|| PathBuf::from(INCLUDE_DIR));
    // Warnings go to stderr so `$(latentmas ffi-flags)` stays usable.
    let lib = lib_dir.join(if a.shared { "liblatentmas.so" } else { "liblatentmas.a" });
    if !lib.exists() {
        eprintln!("warning: {} does not exist; build it with `cargo build --release` or pass --lib-dir", lib.display());
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
    Ok(())
}
