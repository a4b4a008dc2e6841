//! `latentmas devices`: what this machine offers the engine: the CPU (name, the SIMD features the cpu
//! backend dispatches on) and the CUDA probe's verdict (device name, or the one-line reason there is none).
//! `--require cuda` makes a missing device an error, for scripts such as the GPU bundle's run.sh.

use latentmas::backend::cuda;

#[derive(clap::Args)]
pub struct Args {
    /// Exit with an error (and the probe's reason) when this device is not usable: cuda.
    #[arg(long, value_parser = ["cuda"])]
    require: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    println!("cpu: {} ({} threads; {})", cpu_name(), num_cpus(), cpu_features().join(" "));
    match cuda::probe() {
        Ok(info) => println!("cuda: {} ({} device(s))", info.name, info.devices),
        Err(e) if a.require.is_some() => anyhow::bail!("{e}"),
        Err(e) => println!("cuda: {e}"),
    }
    Ok(())
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')));
    name.map_or_else(|| std::env::consts::ARCH.to_string(), |(_, v)| v.trim().to_string())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The features the cpu backend's kernels choose between, in the order they are preferred.
fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let have = [
            ("amx-bf16", latentmas::backend::cpu::amx::available()),
            ("avx512bf16", std::arch::is_x86_feature_detected!("avx512bf16")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ];
        have.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }
    #[cfg(target_arch = "aarch64")]
    {
        vec!["neon"]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        vec!["portable"]
    }
}
