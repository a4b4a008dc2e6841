//! `latentmas report`: the side-by-side table of methods over results files, and an SVG chart.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Results JSONL files written by `latentmas eval`.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Also write a chart of accuracy against output tokens and time.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let report = latentmas::eval::build_report(&a.results)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("{report}");
    if let Some(path) = &a.plot {
        report.write_svg(path)?;
        println!("chart: {}", path.display());
    }
    Ok(())
}
