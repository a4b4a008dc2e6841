//! Build script: the host emulator and every `crates/kernels/cuda/<op>.cu`, compiled exactly as the main crate's
//! build.rs compiles them for emulation (C++20, `-DLMAS_EMU`, libc only), with the bit-exact bf16 fallback
//! (no CUDA headers needed), into the static library this crate's kernel launches call.

use std::fs;
use std::path::{Path, PathBuf};

fn list(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let kdir = root.parent().expect("crate inside the repository").join("crates/kernels/cuda");
    println!("cargo:rerun-if-changed=build.rs");
    // Relative to this crate (as cargo reads it): a target directory copied to another checkout then
    // watches that checkout's kernels, not the ones it was first built from.
    println!("cargo:rerun-if-changed=../crates/kernels/cuda");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .cpp_link_stdlib(None)
            .std("c++20")
            .flag("-x")
            .flag("c++")
            .include(&kdir)
            .define("LMAS_EMU", "1")
            .define("LMAS_EMU_TSAN", "0")
            .define("LMAS_EMU_HAVE_CUDA_BF16", "0")
            .flag("-fno-exceptions")
            .flag("-fno-rtti")
            .flag("-fno-threadsafe-statics")
            .flag("-fno-strict-aliasing")
            .flag("-Wno-unknown-pragmas")
            .pic(true)
            .warnings(true)
            .opt_level(2);
        b
    };
    let runtime = base().files(list(&kdir.join("emu"), "cpp")).compile_intermediates();
    // Whole archive: each op registers its kernels through a linker section (`lmas_emu_ops`), and nothing
    // else references an op's object file, so a plain static link would drop them all.
    base()
        .files(list(&kdir, "cu"))
        .files(list(&kdir.join("emu"), "cu"))
        .objects(runtime)
        .link_lib_modifier("+whole-archive")
        .compile("cuda_emu_kernels");
}
