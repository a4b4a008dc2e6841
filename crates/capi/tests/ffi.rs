//! The C ABI from C: the header's struct layouts are the Rust ones, the shared library exports exactly the
//! header's functions (tests/header.rs checks that the header is the one cbindgen generates), `ffi/examples/run.c` builds with the system C compiler against the static and the shared
//! library and gives the CLI's report, every entry point rejects bad arguments with the documented codes
//! (`ffi/tests/abi_check.c`), one engine serves several threads, `run.c` is clean under valgrind, and
//! `ffi/examples/stream_run.c` streams one LatentMAS answer and aborts another mid-decode.
//!
//! The libraries are the ones `cargo build --release -p latentmas-capi` put in target/<profile> (see
//! [`lib_dir`]); the C programs go to target/tmp/ffi.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "../src/abi.rs"]
mod abi;

use abi::{LmEngineParams, LmRunParams, LmSamplingParams, NATIVE_STATIC_LIBS};

const TINY: &str = "tests/data/tiny-tied";
const QUESTION: &str = "What is 12 plus 30?";

/// The repository root (the header, the C sources and the test models live there).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `latentmas` CLI of this target directory (another package's binary, so cargo names no path for it):
/// `cargo test` at the root builds it with the engine's tests.
fn cli_exe() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let exe = deps.parent().unwrap().join("latentmas");
    assert!(exe.is_file(), "no {} (build it with `cargo build --release --bin latentmas`)", exe.display());
    exe
}

/// The directory holding liblatentmas.a / .so: target/<profile>, where `cargo build --release -p
/// latentmas-capi` puts them. `cargo test` does not build them (a crate without an rlib is not a dependency
/// of its own integration tests), so tools/test.sh builds them first; a library older than the sources it is
/// built from is refused here rather than tested.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let build = "build them with `cargo build --release -p latentmas-capi` (tools/test.sh does)";
        let built = ["liblatentmas.a", "liblatentmas.so"].map(|f| {
            let lib = dir.join(f);
            let meta = std::fs::metadata(&lib).unwrap_or_else(|_| panic!("no {}: {build}", lib.display()));
            meta.modified().unwrap()
        });
        let oldest = built.into_iter().min().unwrap();
        let sources = [root().join("src"), root().join("crates/capi/src"), root().join("kernels")];
        if let Some((newer, _)) = sources.iter().flat_map(|d| newest_file(d)).find(|(_, t)| *t > oldest) {
            panic!("the libraries in {} are older than {}: {build}", dir.display(), newer.display());
        }
        dir
    })
    .clone()
}

/// The most recently modified file under `dir` (recursively), with its time.
fn newest_file(dir: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok()).map(|t| (path, t))
        };
        if let Some((p, t)) = found {
            if newest.as_ref().is_none_or(|(_, n)| t > *n) {
                newest = Some((p, t));
            }
        }
    }
    newest
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ffi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn check(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `latentmas-ffi-flags ARGS --lib-dir <this run's libraries>`, split into arguments.
fn ffi_flags(args: &[&str]) -> Vec<String> {
    let lib = lib_dir();
    let out =
        Command::new(env!("CARGO_BIN_EXE_latentmas-ffi-flags")).args(args).arg("--lib-dir").arg(&lib).output().unwrap();
    check(&out, "latentmas-ffi-flags").split_whitespace().map(String::from).collect()
}

/// Compiles `source` (relative to the repository root) with the flags `latentmas-ffi-flags` prints.
fn build_c(source: &str, name: &str, shared: bool) -> PathBuf {
    let exe = out_dir().join(name);
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"]).arg(root().join(source));
    cmd.args(ffi_flags(if shared { &["--shared"] } else { &[] })).arg("-o").arg(&exe);
    check(&cmd.output().unwrap(), &format!("{cmd:?}"));
    exe
}

/// Each C program is built once per test binary, whichever test needs it first.
fn example_static() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("ffi/examples/run.c", "run-static", false))
}

fn abi_check() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("ffi/tests/abi_check.c", "abi_check", false))
}

fn run_in_root(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe).args(args).current_dir(root()).output().unwrap()
}

const EXAMPLE_ARGS: [&str; 9] =
    ["--method", "latent", "--greedy", "--max-new-tokens", "4", "--latent-steps", "2", TINY, QUESTION];

// ------------------------------------------------------------------------------------------------------------
// Header ↔ Rust
// ------------------------------------------------------------------------------------------------------------

/// The functions the header declares (every prototype starts with `LM_API`).
fn header_functions() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ffi/latentmas.h")).unwrap();
    let mut names: Vec<String> = text
        .split("LM_API")
        .skip(1)
        .filter_map(|decl| {
            decl.split('(').next()?.split_whitespace().last().map(|n| n.trim_start_matches('*').to_string())
        })
        .filter(|n| n.starts_with("lm_"))
        .collect();
    names.sort();
    names
}

#[test]
fn header_struct_layout_matches_the_rust_side() {
    let out = check(&run_in_root(abi_check(), &["layout"]), "abi_check layout");
    let c: BTreeMap<String, usize> = out
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    use std::mem::{align_of, offset_of, size_of};
    let rust: BTreeMap<String, usize> = [
        ("sizeof.lm_engine_params", size_of::<LmEngineParams>()),
        ("alignof.lm_engine_params", align_of::<LmEngineParams>()),
        ("lm_engine_params.model", offset_of!(LmEngineParams, model)),
        ("lm_engine_params.device", offset_of!(LmEngineParams, device)),
        ("lm_engine_params.kv_budget_bytes", offset_of!(LmEngineParams, kv_budget_bytes)),
        ("lm_engine_params.n_threads", offset_of!(LmEngineParams, n_threads)),
        ("lm_engine_params.realign", offset_of!(LmEngineParams, realign)),
        ("sizeof.lm_run_params", size_of::<LmRunParams>()),
        ("alignof.lm_run_params", align_of::<LmRunParams>()),
        ("lm_run_params.method", offset_of!(LmRunParams, method)),
        ("lm_run_params.topology", offset_of!(LmRunParams, topology)),
        ("lm_run_params.task_family", offset_of!(LmRunParams, task_family)),
        ("lm_run_params.latent_steps", offset_of!(LmRunParams, latent_steps)),
        ("lm_run_params.max_new_tokens", offset_of!(LmRunParams, max_new_tokens)),
        ("lm_run_params.greedy", offset_of!(LmRunParams, greedy)),
        ("lm_run_params.temperature", offset_of!(LmRunParams, temperature)),
        ("lm_run_params.top_k", offset_of!(LmRunParams, top_k)),
        ("lm_run_params.top_p", offset_of!(LmRunParams, top_p)),
        ("lm_run_params.seed", offset_of!(LmRunParams, seed)),
        ("lm_run_params.progress", offset_of!(LmRunParams, progress)),
        ("lm_run_params.progress_user_data", offset_of!(LmRunParams, progress_user_data)),
        ("sizeof.lm_sampling_params", size_of::<LmSamplingParams>()),
        ("alignof.lm_sampling_params", align_of::<LmSamplingParams>()),
        ("lm_sampling_params.greedy", offset_of!(LmSamplingParams, greedy)),
        ("lm_sampling_params.temperature", offset_of!(LmSamplingParams, temperature)),
        ("lm_sampling_params.top_k", offset_of!(LmSamplingParams, top_k)),
        ("lm_sampling_params.top_p", offset_of!(LmSamplingParams, top_p)),
        ("lm_sampling_params.seed", offset_of!(LmSamplingParams, seed)),
        ("sizeof.bool", size_of::<bool>()),
        // Codes cross as `int`; the enum type must not be wider.
        ("sizeof.lm_status", size_of::<std::ffi::c_int>()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(c, rust, "C layout (left) vs Rust layout (right)");
}

#[test]
fn header_compiles_cleanly_as_c_and_cpp() {
    let probe = out_dir().join("header_probe.c");
    std::fs::write(&probe, "#include \"latentmas.h\"\n#include \"latentmas.h\"\nint main(void) { return LM_OK; }\n")
        .unwrap();
    let include = format!("-I{}", root().join("ffi").display());
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic", "-Wstrict-prototypes", "-fsyntax-only"];
    for std in ["-std=c99", "-std=c11"] {
        let out = Command::new(cc()).arg(std).args(strict).arg(&include).arg(&probe).output().unwrap();
        check(&out, &format!("cc {std} on the header"));
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if have(&cxx) {
        let out = Command::new(&cxx)
            .args(["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
            .arg(&include)
            .arg(&probe)
            .output()
            .unwrap();
        check(&out, "c++ on the header");
    } else {
        println!("SKIP the C++ check ({cxx} not found)");
    }
}

#[test]
fn the_shared_library_exports_exactly_the_header_functions() {
    if !have("nm") {
        println!("SKIP (nm not found)");
        return;
    }
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(lib_dir().join("liblatentmas.so")).output();
    let out = check(&out.unwrap(), "nm -D");
    let exported: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("lm_"))
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let declared = header_functions();
    assert!(declared.len() >= 25, "found only {} LM_API prototypes in the header", declared.len());
    assert_eq!(exported, declared);
}

// ------------------------------------------------------------------------------------------------------------
// The example and the checks program
// ------------------------------------------------------------------------------------------------------------

/// The example's sections: text, answer, report JSON.
fn parse_example(stdout: &str) -> (String, String, serde_json::Value) {
    let text_at = stdout.find("== text ==\n").expect("a text section") + "== text ==\n".len();
    let answer_at = stdout.find("\n== answer ==\n").expect("an answer section");
    let report_at = stdout.find("\n== report ==\n").expect("a report section");
    let text = stdout[text_at..answer_at].to_string();
    let answer = stdout[answer_at + "\n== answer ==\n".len()..report_at].to_string();
    let json = stdout[report_at + "\n== report ==\n".len()..].trim();
    (text, answer, serde_json::from_str(json).unwrap_or_else(|e| panic!("report is not JSON ({e}): {json}")))
}

/// A report without its timings (wall clock differs between runs).
fn without_timings(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("_s") && k != "startup");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn example_runs_on_the_tiny_model_and_reports_what_the_cli_reports() {
    let out = run_in_root(example_static(), &EXAMPLE_ARGS);
    let stdout = check(&out, "ffi/examples/run.c");
    let (text, answer, report) = parse_example(&stdout);
    assert_eq!(report["method"], "latent");
    assert_eq!(report["question"], QUESTION);
    assert_eq!(report["text"].as_str().unwrap(), text);
    assert_eq!(report["answer"].as_str().unwrap_or("(none)"), answer);
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 4);
    assert_eq!(agents.iter().map(|a| a["latent_steps"].as_u64().unwrap()).sum::<u64>(), 6);
    assert!((1..=4).contains(&report["totals"]["generated_tokens"].as_u64().unwrap()));

    // The same question through `latentmas run --json`: the same report but for the timings.
    let cli = Command::new(cli_exe())
        .args(["run", "--model", TINY, "--question", QUESTION, "--method", "latent", "--greedy"])
        .args(["--max-new-tokens", "4", "--latent-steps", "2", "--json"])
        .current_dir(root())
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_str(check(&cli, "latentmas run").trim()).unwrap();
    assert_eq!(without_timings(report), without_timings(cli));
}

#[test]
fn example_fails_cleanly_on_a_missing_model() {
    let out = run_in_root(example_static(), &["--greedy", "/nonexistent/model"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LM_ERR_MODEL") && err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn example_links_against_the_shared_library() {
    let exe = build_c("ffi/examples/run.c", "run-shared", true);
    // `cargo test` puts target/<profile> on LD_LIBRARY_PATH, which outranks the rpath, and the
    // liblatentmas.so there is whatever `cargo build` last left (cargo test does not refresh it).
    let out = Command::new(&exe).args(EXAMPLE_ARGS).env_remove("LD_LIBRARY_PATH").current_dir(root()).output();
    let stdout = check(&out.unwrap(), "run.c (shared)");
    let (_, _, shared) = parse_example(&stdout);
    let stdout = check(&run_in_root(example_static(), &EXAMPLE_ARGS), "run.c (static)");
    let (_, _, stat) = parse_example(&stdout);
    assert_eq!(without_timings(shared), without_timings(stat));
}

#[test]
fn every_entry_point_rejects_bad_arguments_with_its_code() {
    let out = run_in_root(abi_check(), &["errors", TINY]);
    let stdout = check(&out, "abi_check errors");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic reached the boundary:\n{stderr}");
}

#[test]
fn one_engine_serves_several_threads() {
    let stdout = check(&run_in_root(abi_check(), &["threads", TINY]), "abi_check threads");
    assert!(stdout.contains("0 failed"), "{stdout}");
}

/// `valgrind` with leak errors on (definite, indirect and possible leaks; the suppressions cover only
/// process-lifetime statics of dependencies), or None when valgrind is not installed.
fn valgrind(exe: &Path, args: &[&str]) -> Option<Output> {
    if !have("valgrind") {
        println!("SKIP (valgrind not found)");
        return None;
    }
    let out = Command::new("valgrind")
        .args(["--leak-check=full", "--error-exitcode=1", "--errors-for-leak-kinds=definite,indirect,possible"])
        .arg(format!("--suppressions={}", root().join("ffi/tests/valgrind.supp").display()))
        .arg(exe)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn example_has_no_leak_or_memory_error_under_valgrind() {
    let Some(out) = valgrind(example_static(), &EXAMPLE_ARGS) else { return };
    check(&out, "valgrind ffi/examples/run.c");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// Every bad-argument path (forged and freed handles, NULLs, invalid UTF-8, an impossible KV budget) reads and
/// writes only what it should, and leaks nothing.
#[test]
fn bad_arguments_are_memory_clean_under_valgrind() {
    let Some(out) = valgrind(abi_check(), &["errors", TINY]) else { return };
    check(&out, "valgrind abi_check errors");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// The valgrind check can fail: a result the program never frees is reported as lost where lm_run made it
/// (the registry hides its pointers from leak checkers on purpose).
#[test]
fn valgrind_reports_a_result_the_program_never_frees() {
    let Some(out) = valgrind(abi_check(), &["leak", TINY]) else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "valgrind should fail:\n{stderr}");
    assert!(stderr.contains("definitely lost in loss record") && stderr.contains("lm_run"), "{stderr}");
}

// ------------------------------------------------------------------------------------------------------------
// ffi-flags
// ------------------------------------------------------------------------------------------------------------

#[test]
fn ffi_flags_prints_the_include_dir_and_the_libraries() {
    let lib = lib_dir();
    assert_eq!(ffi_flags(&["--cflags"]), [format!("-I{}", root().join("ffi").display())]);
    let mut libs = vec![lib.join("liblatentmas.a").display().to_string()];
    libs.extend(NATIVE_STATIC_LIBS.iter().map(|s| s.to_string()));
    assert_eq!(ffi_flags(&["--libs"]), libs);
    let shared = ffi_flags(&["--libs", "--shared"]);
    assert_eq!(shared[1], "-llatentmas");
    assert_eq!(ffi_flags(&[]).len(), 1 + libs.len());
}

/// The hard-coded native libraries are what rustc asks a staticlib to link (those of std: no dependency links
/// a system library; if one ever does, the link in the example tests fails and names the missing symbols).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn native_static_libs_are_what_rustc_prints() {
    let dir = out_dir().join("native-libs-probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("probe.rs"), "#[no_mangle]\npub extern \"C\" fn probe() {}\n").unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--crate-type", "staticlib", "--crate-name", "probe", "--print", "native-static-libs"])
        .arg("-o")
        .arg(dir.join("libprobe.a"))
        .arg(dir.join("probe.rs"))
        .output()
        .unwrap();
    check(&out, "rustc --print native-static-libs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find_map(|l| l.split("native-static-libs: ").nth(1)).expect("a native-static-libs note");
    let printed: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(printed, NATIVE_STATIC_LIBS, "update NATIVE_STATIC_LIBS in crates/capi/src/abi.rs");
}

// ------------------------------------------------------------------------------------------------------------
// The row API
// ------------------------------------------------------------------------------------------------------------

fn rows_check() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build_c("ffi/tests/rows_check.c", "rows_check", false))
}

fn assert_clean_checks(out: &Output, what: &str) {
    let stdout = check(out, what);
    assert!(stdout.contains("0 failed"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic reached the boundary:\n{stderr}");
}

/// Every row call: good paths, NULLs, wrong sizes, a full KV buffer, a too-long prompt, a caller stop, an abort
/// mid-decode (LM_ERR_ABORTED, then the engine gives the same tokens again and lm_run works).
#[test]
fn row_api_checks_pass() {
    assert_clean_checks(&run_in_root(rows_check(), &["rows", TINY]), "rows_check rows");
}

#[test]
fn four_threads_share_one_engine_through_rows() {
    assert_clean_checks(&run_in_root(rows_check(), &["threads", TINY]), "rows_check threads");
}

#[test]
fn row_api_is_memory_clean_under_valgrind() {
    let Some(out) = valgrind(rows_check(), &["rows", TINY]) else { return };
    assert_clean_checks(&out, "valgrind rows_check rows");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
}

/// The row checks and the 4-thread run built with AddressSanitizer (the C side instrumented, the library's
/// allocations checked through ASan's malloc; leaks reported at exit). Skips, saying why, when the compiler
/// cannot build with it.
#[test]
fn row_api_is_clean_under_address_sanitizer() {
    let exe = out_dir().join("rows_check_asan");
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c11", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"])
        .arg(root().join("ffi/tests/rows_check.c"));
    cmd.args(ffi_flags(&[])).arg("-o").arg(&exe);
    let built = cmd.output().unwrap();
    if !built.status.success() {
        println!(
            "SKIP ({} cannot build with -fsanitize=address: {})",
            cc(),
            String::from_utf8_lossy(&built.stderr).trim()
        );
        return;
    }
    for mode in ["rows", "threads"] {
        let out = Command::new(&exe)
            .args([mode, TINY])
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=99")
            .current_dir(root())
            .output()
            .unwrap();
        assert_clean_checks(&out, &format!("rows_check {mode} under ASan"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("ERROR: LeakSanitizer"), "{stderr}");
    }
}

/// The streaming example prints the tokens as they come and then their count; the streamed text is the one
/// the row API's pieces make.
#[test]
fn stream_example_streams_a_latent_chain() {
    let exe = build_c("ffi/examples/stream.c", "stream", false);
    let out = run_in_root(&exe, &["--latent-steps", "2", "--max-new-tokens", "5", TINY, QUESTION]);
    let stdout = check(&out, "ffi/examples/stream.c");
    let (_, count) = stdout.rsplit_once("\n== ").expect("a token count line");
    let n: u32 = count.trim_end().trim_end_matches(" tokens ==").parse().unwrap_or_else(|_| panic!("{stdout}"));
    assert!((1..=5).contains(&n), "{stdout}");
    let bad = run_in_root(&exe, &["/nonexistent/model"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("LM_ERR_MODEL"));
}

/// The lm_run streaming example: the first question's answer streams token by token and is the CLI's text
/// for the same run; the second (the same question, so the same greedy tokens) is aborted by its token
/// callback after 2 tokens, mid-decode, and the engine answers a third one afterwards.
#[test]
fn stream_run_example_streams_one_answer_and_aborts_another() {
    let exe = build_c("ffi/examples/stream_run.c", "stream_run", false);
    let flags = ["--latent-steps", "2", "--max-new-tokens", "8"];
    let mut args = flags.to_vec();
    args.extend([TINY, QUESTION, "--abort-after", "2", QUESTION, "--abort-after", "100000", QUESTION]);
    let stdout = check(&run_in_root(&exe, &args), "ffi/examples/stream_run.c");
    let section = |k: usize| {
        let start = stdout.find(&format!("== question {k} ==\n")).unwrap_or_else(|| panic!("question {k}: {stdout}"));
        let body = &stdout[start + format!("== question {k} ==\n").len()..];
        let end = body.find("\n== ").unwrap_or_else(|| panic!("question {k} has no end line: {stdout}"));
        let status = body[end + 4..].lines().next().unwrap().to_string();
        (body[..end].to_string(), status)
    };
    let (first, first_status) = section(1);
    let (cut, cut_status) = section(2);
    let (third, third_status) = section(3);

    let cli = Command::new(cli_exe())
        .args(["run", "--model", TINY, "--question", QUESTION, "--method", "latent", "--greedy"])
        .args(flags)
        .arg("--json")
        .current_dir(root())
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_str(check(&cli, "latentmas run").trim()).unwrap();
    let generated = cli["totals"]["generated_tokens"].as_u64().unwrap();
    assert!(generated > 2, "the test needs an answer longer than the abort point: {cli}");
    assert_eq!(first.trim(), cli["text"].as_str().unwrap().trim(), "streamed vs the CLI's text");
    assert!(first_status.starts_with(&format!("done: {generated} tokens")), "{first_status}");

    assert!(cut_status.starts_with("aborted after 2 tokens: ") && cut_status.contains("aborted"), "{cut_status}");
    assert!(!cut.is_empty() && first.starts_with(&cut) && cut.len() < first.len(), "{cut:?} vs {first:?}");
    assert_eq!((third, third_status), (first, first_status), "the engine after an abort");
}
