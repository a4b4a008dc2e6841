//! The harness of the test binaries whose tests need what a machine or a checkout can lack (a CUDA device,
//! ../shared): libtest's `#[ignore]` is fixed when the binary is built, so these binaries (`harness = false`
//! in Cargo.toml) list their tests in `main`, and a test whose need is unmet is reported as ignored with
//! the reason (`... ignored (../shared/data absent)`), never as passed. They take libtest's arguments (a
//! name filter, `--exact`, `--ignored`, `--list`, `--test-threads`, ...) and do not capture output.

// each binary uses the part it needs
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Completion, Trial};

/// Why a test cannot run here, or nothing when it can.
pub type Need = fn() -> Result<(), String>;

/// A test that always runs; a panic fails it.
pub fn test(name: &'static str, check: fn()) -> Trial {
    Trial::test(name, move || {
        check();
        Ok(())
    })
}

/// A test that runs when `need` is met and is reported as ignored with its reason otherwise.
pub fn test_needing(name: &'static str, need: Need, check: fn()) -> Trial {
    Trial::ignorable_test(name, move || match need() {
        Ok(()) => {
            check();
            Ok(Completion::Completed)
        }
        Err(why) => Ok(Completion::ignored_with(why)),
    })
}

/// Runs the trials as libtest would (the command line's filter and flags) and exits with its status.
pub fn run(trials: Vec<Trial>) -> ! {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// The checkout's root (the folder of Cargo.lock), for the test crates of crates/ as for the engine's.
pub fn workspace_root() -> PathBuf {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    krate.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(krate).to_path_buf()
}

/// `rel` under ../shared (next to the checkout), or why not: users' clones have no ../shared.
pub fn shared(rel: &str) -> Result<PathBuf, String> {
    let path = workspace_root().join("../shared").join(rel);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("../shared/{rel} absent"))
    }
}

/// A trial named after its function: `trial!(check)`, or `trial!(check, needs need)`.
macro_rules! trial {
    ($check:ident) => {
        $crate::harness::test(stringify!($check), $check)
    };
    ($check:ident, needs $need:expr) => {
        $crate::harness::test_needing(stringify!($check), $need, $check)
    };
}
pub(crate) use trial;
