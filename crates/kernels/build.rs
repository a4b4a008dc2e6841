//! Build script: the CUDA kernels, twice from the same source.
//!
//! 1. GPU route (only when nvcc is found): every `crates/kernels/cuda/<op>.cu` is compiled as ONE translation unit into
//!    ONE fatbin (SASS for sm_90a and sm_80, PTX for compute_90, `-lineinfo`), written to
//!    `$OUT_DIR/latentmas_kernels.fatbin` and embedded by `src/kernels` (`include_bytes!`). The `ptxas -v`
//!    resource report is parsed into `$OUT_DIR/kernel_report.json` (also embedded). Nothing CUDA is linked.
//!    nvcc is found through `NVCC` (the binary), `CUDA_HOME` (`$CUDA_HOME/bin/nvcc`) or `PATH`. Without it
//!    the build succeeds with an empty fatbin and a reason string, and says how to get the toolchain.
//! 2. Host emulation (feature `emu`, the default): g++ compiles the same `crates/kernels/cuda/<op>.cu` (C++20, `-x c++`, `-DLMAS_EMU`) with
//!    `crates/kernels/cuda/emu/` into the static library `latentmas_emu` (libc only: no exceptions, no libstdc++
//!    runtime), which `crates/kernels/src/emu.rs` calls and `tests/kernels_emu.rs` tests. bf16 comes from
//!    `cuda_bf16.h` when the CUDA headers are found (next to nvcc), else from a bit-exact fallback.
//!    `LATENTMAS_EMU_TSAN=1` builds that library with `-fsanitize=thread` (one OS thread per CUDA thread)
//!    and links libtsan: the race-checking mode of the emulation tests. Without the feature (the C library)
//!    only the launch planners are compiled (`-DLMAS_PLAN_ONLY`: the kernels become uncalled inline
//!    functions), into `latentmas_plan`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real GPU code for Hopper (sm_90a: H100/H200) and Ampere (sm_80: A100), plus compute_90 PTX that the
/// driver can JIT for newer GPUs. The CUDA 13.0 toolchain's PTX is accepted by the 580 driver.
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kdir = root.join("cuda");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    for var in ["NVCC", "CUDA_HOME", "LATENTMAS_EMU_TSAN", "LATENTMAS_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let kernels = list(&kdir, "cu");
    let nvcc = find_nvcc();
    let cuda_include = nvcc.as_ref().and_then(|n| cuda_include_dir(n));

    build_fatbin(&root, &out, &kernels, nvcc.as_deref());
    if env::var_os("CARGO_FEATURE_EMU").is_some() {
        build_emulator(&kdir, &kernels, cuda_include.as_deref());
    } else {
        build_planners(&kdir, &kernels, cuda_include.as_deref());
    }
    build_nvtx_shim(&root, cuda_include.as_deref());
}

/// crates/kernels/nvtx_shim.c: NVTX ranges through the header-only NVTX v3 when its headers are next to the CUDA
/// headers (the nvidia-nvtx wheel), empty functions otherwise. Links nothing but libdl (the NVTX loader).
fn build_nvtx_shim(root: &Path, cuda_include: Option<&Path>) {
    let src = root.join("nvtx_shim.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut b = cc::Build::new();
    b.file(&src).warnings(true);
    let nvtx = cuda_include.filter(|inc| inc.join("nvtx3").join("nvToolsExt.h").is_file());
    match nvtx {
        Some(inc) => {
            b.include(inc).define("LMAS_HAVE_NVTX3", "1");
            println!("cargo:rustc-link-lib=dylib=dl");
        }
        // (without any CUDA headers the missing nvcc was reported already)
        None if cuda_include.is_some() => println!(
            "cargo:warning=latentmas: no nvtx3 headers next to the CUDA headers: NVTX ranges are compiled out \
             (tools/install_cuda.sh installs them)"
        ),
        None => {}
    }
    b.compile("latentmas_nvtx");
}

/// Files of `dir` with extension `ext`, sorted (a stable fatbin and object order).
fn list(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        println!("cargo:warning=NVCC={} is not a file; looking further", p.display());
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        let p = PathBuf::from(home).join("bin").join("nvcc");
        if p.is_file() {
            return Some(p);
        }
        println!("cargo:warning=CUDA_HOME is set but {} does not exist; looking on PATH", p.display());
    }
    env::split_paths(&env::var_os("PATH").unwrap_or_default()).map(|d| d.join("nvcc")).find(|p| p.is_file())
}

/// The CUDA include directory next to nvcc (`<root>/bin/nvcc` -> `<root>/include`), if it has cuda_bf16.h.
fn cuda_include_dir(nvcc: &Path) -> Option<PathBuf> {
    let mut cands = Vec::new();
    if let Some(home) = env::var_os("CUDA_HOME") {
        cands.push(PathBuf::from(home).join("include"));
    }
    if let Some(root) = nvcc.parent().and_then(Path::parent) {
        cands.push(root.join("include"));
    }
    cands.into_iter().find(|d| d.join("cuda_bf16.h").is_file())
}

fn build_fatbin(root: &Path, out: &Path, kernels: &[PathBuf], nvcc: Option<&Path>) {
    let fatbin = out.join("latentmas_kernels.fatbin");
    let report = out.join("kernel_report.json");
    let Some(nvcc) = nvcc else {
        fs::write(&fatbin, b"").expect("write empty fatbin");
        fs::write(&report, b"[]").expect("write empty report");
        let reason = "built without nvcc: run tools/install_cuda.sh and rebuild with CUDA_HOME set to the \
                      directory it prints (or NVCC=/path/to/nvcc)";
        println!("cargo:rustc-env=LATENTMAS_KERNELS_STATUS={reason}");
        println!("cargo:rustc-env=LATENTMAS_NVCC_VERSION=");
        println!(
            "cargo:warning=latentmas: no nvcc found (NVCC, CUDA_HOME, PATH): CUDA kernels are not built. The cpu \
             backend and the kernel emulation tests work; for the GPU run tools/install_cuda.sh, then \
             CUDA_HOME=<printed dir> cargo build"
        );
        return;
    };
    println!("cargo:rerun-if-changed={}", nvcc.display());

    // One translation unit: one module for cudarc, every kernel in it.
    let mut unit =
        String::from("// generated by build.rs: every crates/kernels/cuda/<op>.cu in one translation unit\n");
    for k in kernels {
        writeln!(unit, "#include \"{}\"", k.display()).unwrap();
    }
    let unit_path = out.join("latentmas_kernels.cu");
    fs::write(&unit_path, unit).expect("write kernel unit");

    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin")
        .args(GENCODE)
        .args(["-std=c++17", "-O3", "-lineinfo", "-Xptxas", "-v", "--threads", "2"])
        .arg(format!("-I{}", root.join("cuda").display()))
        .arg(&unit_path)
        .arg("-o")
        .arg(&fatbin);
    if let Ok(extra) = env::var("LATENTMAS_NVCC_FLAGS") {
        cmd.args(extra.split_whitespace());
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    fs::write(out.join("ptxas.log"), &log).expect("write ptxas log");
    if !output.status.success() {
        panic!("nvcc failed to compile the kernels ({}):\n{log}", output.status);
    }
    let entries = parse_ptxas(&log);
    for e in &entries {
        if e.spill_stores > 0 || e.spill_loads > 0 {
            println!(
                "cargo:warning=latentmas: kernel {} ({}) spills: {} bytes stored, {} bytes loaded",
                e.name, e.arch, e.spill_stores, e.spill_loads
            );
        }
    }
    fs::write(&report, to_json(&entries)).expect("write kernel report");
    let version = Command::new(nvcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()))
        .unwrap_or_default();
    println!("cargo:rustc-env=LATENTMAS_KERNELS_STATUS=");
    println!("cargo:rustc-env=LATENTMAS_NVCC_VERSION={version}");
}

/// One entry function of the ptxas report.
#[derive(Default)]
struct Entry {
    name: String,
    arch: String,
    registers: u64,
    spill_stores: u64,
    spill_loads: u64,
    shared_bytes: u64,
    stack_bytes: u64,
}

/// Parses `ptxas -v` output:
/// ```text
/// ptxas info    : Compiling entry function 'latentmas_rmsnorm' for 'sm_90a'
/// ptxas info    : Function properties for latentmas_rmsnorm
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 30 registers, used 1 barriers, 128 bytes smem, 392 bytes cmem[0]
/// ```
/// ("Function properties" blocks of non-entry device functions are skipped.)
fn parse_ptxas(log: &str) -> Vec<Entry> {
    fn quoted(s: &str) -> Vec<&str> {
        s.split('\'').skip(1).step_by(2).collect()
    }
    fn number_before(s: &str, unit: &str) -> Option<u64> {
        let i = s.find(unit)?;
        s[..i].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
    let mut out: Vec<Entry> = Vec::new();
    let mut cur: Option<Entry> = None;
    let mut in_props_of_cur = false;
    for line in log.lines() {
        if line.contains("Compiling entry function") {
            if let Some(e) = cur.take() {
                out.push(e);
            }
            let q = quoted(line);
            if q.len() >= 2 {
                cur = Some(Entry { name: q[0].to_string(), arch: q[1].to_string(), ..Default::default() });
            }
            in_props_of_cur = false;
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            in_props_of_cur = cur.as_ref().is_some_and(|e| e.name == rest.trim());
        } else if line.contains("bytes stack frame") {
            if let (true, Some(e)) = (in_props_of_cur, cur.as_mut()) {
                e.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                e.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                e.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used ") && line.contains("registers") {
            if let Some(e) = cur.as_mut() {
                e.registers = number_before(line, "registers").unwrap_or(0);
                e.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    if let Some(e) = cur.take() {
        out.push(e);
    }
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

fn to_json(entries: &[Entry]) -> String {
    let mut s = String::from("[\n");
    for (i, e) in entries.iter().enumerate() {
        write!(
            s,
            "  {{\"name\": \"{}\", \"arch\": \"{}\", \"registers\": {}, \"spill_stores\": {}, \"spill_loads\": {}, \
             \"shared_bytes\": {}, \"stack_bytes\": {}}}{}",
            e.name,
            e.arch,
            e.registers,
            e.spill_stores,
            e.spill_loads,
            e.shared_bytes,
            e.stack_bytes,
            if i + 1 < entries.len() { ",\n" } else { "\n" }
        )
        .unwrap();
    }
    s.push(']');
    s
}

/// The host compile of `crates/kernels/cuda/*.cu` (and the emulator), as C++ without its runtime library.
fn host_build(kdir: &Path, cuda_include: Option<&Path>, tsan: bool) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .cpp_link_stdlib(None) // libc only: the library links into C programs and the CLI without libstdc++
        .std("c++20")
        .flag("-x")
        .flag("c++")
        .include(kdir)
        .define("LMAS_EMU", "1")
        .define("LMAS_EMU_TSAN", if tsan { "1" } else { "0" })
        .flag("-fno-exceptions")
        .flag("-fno-rtti")
        .flag("-fno-threadsafe-statics")
        // kernels reinterpret bf16 arrays as uint4 for 16-byte loads, as CUDA code does
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unknown-pragmas")
        .warnings(true)
        .opt_level(if tsan { 1 } else { 2 });
    match cuda_include {
        Some(inc) => b.include(inc).define("LMAS_EMU_HAVE_CUDA_BF16", "1"),
        None => b.define("LMAS_EMU_HAVE_CUDA_BF16", "0"),
    };
    if tsan {
        b.debug(true);
    }
    b
}

/// The planners alone: what the cuda backend needs from `crates/kernels/cuda/*.cu` on the host.
fn build_planners(kdir: &Path, kernels: &[PathBuf], cuda_include: Option<&Path>) {
    host_build(kdir, cuda_include, false).define("LMAS_PLAN_ONLY", "1").files(kernels).compile("latentmas_plan");
    println!("cargo:rustc-env=LATENTMAS_EMU_TSAN=0");
}

fn build_emulator(kdir: &Path, kernels: &[PathBuf], cuda_include: Option<&Path>) {
    let tsan = env::var("LATENTMAS_EMU_TSAN").is_ok_and(|v| !v.is_empty() && v != "0");
    let base = || host_build(kdir, cuda_include, tsan);
    // The runtime (scheduler, checks, layout table) is never instrumented: under TSan it hides its own
    // locking and declares CUDA's happens-before edges itself (crates/kernels/cuda/emu/emu.cpp).
    let runtime = base().files(list(&kdir.join("emu"), "cpp")).compile_intermediates();
    let mut k = base();
    if tsan {
        k.flag("-fsanitize=thread").flag("-Wno-tsan");
        println!("cargo:rustc-link-lib=dylib=tsan");
    }
    k.files(kernels).files(list(&kdir.join("emu"), "cu")).objects(runtime).compile("latentmas_emu");
    println!("cargo:rustc-env=LATENTMAS_EMU_TSAN={}", if tsan { "1" } else { "0" });
}
