//! Flags and helpers shared by several subcommands.

use clap::Args;
use latentmas::sample::SamplingParams;

/// Decoding flags (`--greedy`, or temperature → top-k → top-p with a seed).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Greedy decoding (argmax); overrides the sampling flags.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature [default: 0.6, the reference's].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep the K most likely tokens (0 = no cut) [default: 20, the reference's].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose mass reaches P [default: 0.95, the reference's].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Random seed of the sampler [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The flags over our defaults (the reference's sampling, seed 0).
    pub fn params(&self) -> latentmas::Result<SamplingParams> {
        self.params_over(SamplingParams::default())
    }

    /// The flags given, the rest from `base` (a preset's settings or our defaults).
    pub fn params_over(&self, base: SamplingParams) -> latentmas::Result<SamplingParams> {
        let p = SamplingParams {
            greedy: self.greedy,
            temperature: self.temperature.unwrap_or(base.temperature),
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: self.top_p.unwrap_or(base.top_p),
            seed: self.seed.unwrap_or(base.seed),
        };
        p.validate()?;
        Ok(p)
    }
}

/// `--device`: where the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    /// cuda when a device is usable, else cpu (with a notice).
    Auto,
    /// The cuda backend's bf16 op sequence with its kernels run by the host emulator (slow; for checking the
    /// GPU path without a GPU).
    Emu,
}

impl DeviceArg {
    /// The device [`DeviceArg::kind`] picks, without its notices or errors (cuda is named even when it
    /// would fail: that run fails anyway).
    pub fn resolve_silently(&self) -> latentmas::engine::DeviceKind {
        use latentmas::engine::DeviceKind;
        match self {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Emu => DeviceKind::Emu,
            DeviceArg::Cuda => DeviceKind::Cuda,
            DeviceArg::Auto => match latentmas::backend::cuda::probe() {
                Ok(_) => DeviceKind::Cuda,
                Err(_) => DeviceKind::Cpu,
            },
        }
    }

    /// The engine device for this flag: cpu and emu always run; cuda fails in one clear line when there is no
    /// driver, device or kernels in this build; auto uses cuda when the probe succeeds, else cpu with a notice.
    pub fn kind(&self) -> anyhow::Result<latentmas::engine::DeviceKind> {
        use latentmas::engine::DeviceKind;
        match self {
            DeviceArg::Cpu => Ok(DeviceKind::Cpu),
            DeviceArg::Emu => Ok(DeviceKind::Emu),
            DeviceArg::Auto => match latentmas::backend::cuda::probe() {
                Ok(_) => Ok(DeviceKind::Cuda),
                Err(e) => {
                    eprintln!("note: --device auto: using the cpu backend ({e})");
                    Ok(DeviceKind::Cpu)
                }
            },
            DeviceArg::Cuda => match latentmas::backend::cuda::probe() {
                Err(e) => anyhow::bail!("--device cuda: {e}"),
                Ok(_) => Ok(DeviceKind::Cuda),
            },
        }
    }
}

/// Writes a file whole or not at all (a temporary file in the same directory, renamed; removed on error
/// and on SIGINT). `what` names the flag in messages.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    Ok(latentmas_cli::output::write_atomic(path, bytes, what)?)
}

/// `--threads`: at least 1, and at most the CPUs this process may use (more threads than that only slow
/// the pool down: 10000 took over a minute for 3 tokens), with a note when clamped.
pub fn thread_count(requested: Option<usize>) -> anyhow::Result<Option<usize>> {
    let Some(n) = requested else { return Ok(None) };
    if n == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    if n > cpus {
        eprintln!("note: --threads {n} clamped to {cpus}, the CPUs this process may use");
        return Ok(Some(cpus));
    }
    Ok(Some(n))
}
