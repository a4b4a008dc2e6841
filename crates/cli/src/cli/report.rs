//! `latentmas report`: the side-by-side table of methods over results files (the shard files of one run
//! merge), an SVG chart, and the merged records as one results file.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Results JSONL files written by `latentmas eval` (e.g. the shard files of one `--shard` run; an item
    /// recorded twice, or records of one task and method made differently, are refused).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Also write a chart of accuracy against output tokens and time.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write every record, merged, as one results file (a new path).
    #[arg(long)]
    merge: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Bad output paths fail before the inputs are read.
    if let Some(path) = &a.plot {
        latentmas_cli::output::check_output_file(path, "--plot")?;
    }
    if let Some(path) = &a.merge {
        latentmas_cli::output::check_output_file(path, "--merge")?;
    }
    let report = latentmas_cli::eval::build_report(&a.results)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("{report}");
    if let Some(path) = &a.plot {
        report.write_svg(path)?;
        println!("chart: {}", path.display());
    }
    if let Some(path) = &a.merge {
        report.write_merged(path)?;
        println!("merged {} record(s): {}", report.records.len(), path.display());
    }
    Ok(())
}
