//! What only the `latentmas` command line uses, over the engine (the `latentmas` crate):
//! - [`eval`]: datasets, scoring, the code sandbox, results files and reports; [`bench`]: the benchmarks.
//! - [`output`] + [`interrupt`]: files written whole or not at all, and cleanup on SIGINT/SIGTERM.
//! - [`table`]: the text tables; [`kernel_table`]: the kernels' resource report as one.
//!
//! The subcommands themselves are the binary's (src/cli/, one file each).

pub mod bench;
pub mod eval;
pub mod interrupt;
pub mod kernel_table;
pub mod output;
pub mod table;
