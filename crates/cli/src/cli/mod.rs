//! Subcommands of the `latentmas` binary.

mod align;
mod bench;
mod common;
mod devices;
mod eval;
mod extract;
mod generate;
mod kernels;
mod preset;
mod prompts;
mod report;
mod run;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "latentmas",
    version,
    about = "LatentMAS: multi-agent reasoning in latent space on a minimal Qwen3 engine"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a random-weight checkpoint of a real Qwen3 shape (with the Qwen3 tokenizer).
    Synth(synth::Args),
    /// One chat turn: stream the reply and print tokens/s.
    Generate(generate::Args),
    /// Run single / TextMAS / LatentMAS on questions and report text, answer and per-agent accounting.
    Run(run::Args),
    /// Import the reference's prompt set from a checkout of the authors' code (`--prompts reference`).
    Prompts(prompts::Args),
    /// Compute (or find cached) the latent alignment W_a of a model.
    Align(align::Args),
    /// Run a benchmark file through one method and score it; resumable.
    Eval(eval::Args),
    /// Compare methods over eval results files (table, optional SVG chart).
    Report(report::Args),
    /// Print the normalised prediction of a model output read from stdin.
    Extract(extract::Args),
    /// The CUDA kernels built into this binary: registers, spills, shared memory per kernel (ptxas -v).
    Kernels(kernels::Args),
    /// What this machine offers: the CPU's SIMD features and whether a CUDA device is usable.
    Devices(devices::Args),
    /// Measure bandwidth, peak FLOP/s, prefill, decode, latent steps and whole questions, with % of roofline.
    Bench(bench::Args),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Synth(a) => synth::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Run(a) => run::run(a),
        Command::Prompts(a) => prompts::run(a),
        Command::Align(a) => align::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Report(a) => report::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Kernels(a) => kernels::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
