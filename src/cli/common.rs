//! Flags and helpers shared by several subcommands.

use clap::Args;
use latentmas::sample::SamplingParams;

/// Decoding flags (`--greedy`, or temperature → top-k → top-p with a seed).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Greedy decoding (argmax); overrides the sampling flags.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature (reference: 0.6).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = no cut; reference: 20).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose mass reaches P (reference: 0.95).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> latentmas::Result<SamplingParams> {
        let p = SamplingParams {
            greedy: self.greedy,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
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
    Ok(latentmas::output::write_atomic(path, bytes, what)?)
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
