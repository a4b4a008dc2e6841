//! `latentmas kernels`: the ptxas resource report of every CUDA kernel built into this binary.

#[derive(clap::Args)]
pub struct Args {
    /// Print `[{"name", "arch", "registers", "spill_stores", "spill_loads", "shared_bytes", ...}]`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    latentmas_cli::kernel_table::print_kernel_table(a.json);
    Ok(())
}
