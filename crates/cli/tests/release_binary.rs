//! The binaries this test run built link no sanitizer runtime. The ThreadSanitizer pass of tools/test.sh
//! builds in its own target directory (target/tsan) for this reason: a libtsan-linked `latentmas` left in
//! target/release runs a prefill 25x slower and silently spoils every bench run after the tests.

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use harness::trial;
use std::path::{Path, PathBuf};

/// Markers a sanitizer-instrumented ELF carries: the runtime's init symbol, or its library in NEEDED.
const MARKERS: [&[u8]; 6] =
    [b"__tsan_init", b"__asan_init", b"__msan_init", b"libtsan.so", b"libasan.so", b"libmsan.so"];

fn sanitizer_marker(path: &Path) -> Option<&'static str> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    MARKERS
        .iter()
        .find(|m| bytes.windows(m.len()).any(|w| w == **m))
        .map(|m| std::str::from_utf8(m).expect("ascii marker"))
}

fn main() {
    harness::run(vec![
        trial!(cli_binary_links_no_sanitizer),
        trial!(shared_library_links_no_sanitizer, needs shared_library_built),
        trial!(the_check_detects_a_sanitizer_marker),
    ]);
}

/// The C library next to the CLI (built by this run when it built the workspace's default members).
fn shared_library() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_latentmas")).parent().expect("binary has a directory").join("liblatentmas.so")
}

fn shared_library_built() -> Result<(), String> {
    let lib = shared_library();
    if lib.exists() {
        Ok(())
    } else {
        Err(format!("{} not built in this run", lib.display()))
    }
}

fn cli_binary_links_no_sanitizer() {
    let bin = Path::new(env!("CARGO_BIN_EXE_latentmas"));
    assert_eq!(sanitizer_marker(bin), None, "{} is sanitizer-instrumented", bin.display());
}

fn shared_library_links_no_sanitizer() {
    let lib = shared_library();
    assert_eq!(sanitizer_marker(&lib), None, "{} is sanitizer-instrumented", lib.display());
}

fn the_check_detects_a_sanitizer_marker() {
    // The check itself must be able to fail: a file carrying the NEEDED entry of libtsan is flagged.
    let path = std::env::temp_dir().join(format!("lm-sanitizer-marker-{}", std::process::id()));
    std::fs::write(&path, b"\x7fELF....libtsan.so.2\0....").unwrap();
    let found = sanitizer_marker(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(found, Some("libtsan.so"));
}
