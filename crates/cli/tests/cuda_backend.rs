//! GPU tests of the cuda device: every check of tests/gpu_checks/ (the ones tests/emu_backend.rs runs on the
//! emu device) with the cuda device swapped in, plus cuda against emu (the same bf16 op sequence; only the
//! GEMM summation order and the GPU's math differ). Without a driver or device each GPU test is reported
//! as ignored with the probe's reason (`ignored (device: no CUDA driver/device found ...)`), never as passed: a skipped test is
//! never evidence that the cuda path works. The CPU half (the probe never panics and fails in one line)
//! always runs.
//!
//! Without a GPU, `LATENTMAS_CUDA_EMU=<dir>` (tools/test.sh sets it from tools/cuda_emu.sh) runs the whole
//! binary on the emulated CUDA driver and cuBLAS of cuda-emu/: the real `CudaDevice`, end to end.
//!
//! The binary has its own harness (tests/harness/, `harness = false`): whether a device is present is known
//! only when the tests run.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/cuda_emu.rs"]
mod cuda_emu;
#[path = "../../../tests/gpu_checks/mod.rs"]
mod gpu_checks;
#[path = "../../../tests/harness/mod.rs"]
mod harness;

use gpu_checks::*;
use harness::trial;
use latentmas::backend::cuda::{new_cuda_model, probe, CudaDevice};
use latentmas::backend::emu::new_emu_model;
use latentmas::engine::DeviceKind;
use latentmas::kv::{KvBudget, KvBuffer};
use latentmas::model::qwen3::{ForwardOut, Input, RowStep, Select};

/// Set for the child process that runs [`sync_check_fault_in_this_process`] (and only it).
const FAULT_CHILD: &str = "LATENTMAS_TEST_CUDA_FAULT_CHILD";

fn main() {
    harness::run(vec![
        trial!(probe_never_panics_and_explains_itself_in_one_line),
        trial!(cuda_prefill_and_decode_match_golden, needs device),
        trial!(cuda_embeddings_input_matches_golden, needs device),
        trial!(cuda_greedy_matches_golden_where_the_margin_allows, needs device),
        trial!(cuda_mixed_batch_matches_cpu, needs device),
        trial!(cuda_bf16_checkpoint_matches_cpu, needs device),
        trial!(cuda_latentmas_runs_match_cpu_traces, needs device),
        trial!(cuda_engine_phases_match_cpu_where_the_margin_allows, needs device),
        trial!(cuda_equals_cpu_token_for_token_on_the_trained_tiny_model, needs device),
        trial!(cuda_device_sampling_equals_host_sampling, needs device),
        trial!(cuda_graph_replays_equal_eager_runs, needs device),
        trial!(cuda_matches_emu, needs device),
        trial!(cuda_fresh_buffers_read_as_zero, needs device),
        trial!(cuda_capture_refuses_what_cuda_refuses, needs device),
        trial!(cuda_buffers_never_grow_while_capturing, needs device),
        trial!(cuda_probe_and_devices_share_one_primary_context, needs device),
        trial!(cuda_sync_check_names_the_faulting_kernel, needs device),
        trial!(sync_check_fault_in_this_process, needs device_in_the_fault_child),
        trial!(cli_run_on_cuda_traces_like_cpu, needs device),
    ]);
}

/// A usable CUDA device (a GPU, or the emulated driver); the error is the probe's one line,
/// `device: no CUDA driver/device found (...)`.
fn device() -> Result<(), String> {
    if std::env::var_os(FAULT_CHILD).is_some() {
        return Err("this process runs only the faulting half of cuda_sync_check_names_the_faulting_kernel".into());
    }
    probe_device()
}

/// [`device`], in the child process [`cuda_sync_check_names_the_faulting_kernel`] starts.
fn device_in_the_fault_child() -> Result<(), String> {
    if std::env::var_os(FAULT_CHILD).is_none() {
        return Err(
            "run in its own process by cuda_sync_check_names_the_faulting_kernel: a device fault ends the context"
                .into(),
        );
    }
    probe_device()
}

fn probe_device() -> Result<(), String> {
    let info = probe().map_err(|e| e.to_string())?;
    println!("on {} ({} devices)", info.name, info.devices);
    Ok(())
}

fn probe_never_panics_and_explains_itself_in_one_line() {
    match probe() {
        Ok(info) => assert!(info.devices >= 1 && !info.name.is_empty(), "{info:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(
                msg.contains("no CUDA driver/device found") || msg.contains("kernels are not in this build"),
                "{msg}"
            );
        }
    }
}

fn cuda_prefill_and_decode_match_golden() {
    check_prefill_and_decode("tiny-tied", new_cuda_model);
    check_prefill_and_decode("tiny-untied", new_cuda_model);
}

fn cuda_embeddings_input_matches_golden() {
    check_embeddings_input("tiny-tied", new_cuda_model);
    check_embeddings_input("tiny-untied", new_cuda_model);
}

fn cuda_greedy_matches_golden_where_the_margin_allows() {
    check_greedy("tiny-tied", new_cuda_model);
    check_greedy("tiny-untied", new_cuda_model);
}

fn cuda_mixed_batch_matches_cpu() {
    check_mixed_batch("tiny-tied", new_cuda_model);
    check_mixed_batch("tiny-untied", new_cuda_model);
}

fn cuda_bf16_checkpoint_matches_cpu() {
    bf16_checkpoint_matches_cpu(new_cuda_model);
}

fn cuda_latentmas_runs_match_cpu_traces() {
    latentmas_runs_match_cpu_traces(DeviceKind::Cuda);
}

fn cuda_engine_phases_match_cpu_where_the_margin_allows() {
    engine_phases_match_cpu_where_the_margin_allows(DeviceKind::Cuda);
}

fn cuda_equals_cpu_token_for_token_on_the_trained_tiny_model() {
    trained_model_runs_equal_cpu_token_for_token(DeviceKind::Cuda);
}

fn cuda_device_sampling_equals_host_sampling() {
    device_sampling_equals_host_sampling(DeviceKind::Cuda);
}

/// Graph replays against launching op by op on the GPU: the same kernels and cuBLAS calls with the same
/// shapes, so the results must be bit-identical.
fn cuda_graph_replays_equal_eager_runs() {
    graph_replays_equal_eager_runs(DeviceKind::Cuda);
}

/// cuda against emu on one uneven prefill + decode batch: both are bf16 with f32 accumulation and run the
/// same kernels; cuBLAS sums in another order and the GPU's expf/rsqrtf differ in the last bits, so the
/// logits agree to ~1e-3 of their magnitude (bound 1e-2, a third of the bf16-vs-f32 bound).
fn cuda_matches_emu() {
    const REL: f32 = 1e-2;
    for name in ["tiny-tied", "tiny-untied"] {
        let m = model(name);
        let mut kv = KvBuffer::new(&m.config, KvBudget::Tokens(96)).unwrap();
        let mut cuda = new_cuda_model(&m, kv.slots()).unwrap();
        let mut emu = new_emu_model(&m, kv.slots()).unwrap();
        let prompts: [Vec<u32>; 2] = [(0..19).map(|i| (i * 31 + 7) % 350).collect(), vec![5, 9, 200]];
        let mut rows_c: Vec<_> = (0..2).map(|_| kv.reserve(48).unwrap()).collect();
        let mut rows_e = rows_c.clone();
        let (mut hc, mut lc, mut he, mut le) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for step in 0..4 {
            let ids: Vec<Vec<u32>> =
                if step == 0 { prompts.to_vec() } else { vec![vec![step as u32 + 10], vec![step as u32 + 20]] };
            let run = |rows: &mut [latentmas::kv::KvRow], f: &mut dyn FnMut(&mut [RowStep<'_>])| {
                let (a, b) = rows.split_at_mut(1);
                f(&mut [
                    RowStep { row: &mut a[0], input: Input::Tokens(&ids[0]), select: Select::Last },
                    RowStep { row: &mut b[0], input: Input::Tokens(&ids[1]), select: Select::Last },
                ]);
            };
            run(&mut rows_c, &mut |s| {
                cuda.forward(s, true, ForwardOut { hidden: &mut hc, logits: &mut lc, capture: None }).unwrap()
            });
            run(&mut rows_e, &mut |s| {
                emu.forward(s, true, ForwardOut { hidden: &mut he, logits: &mut le, capture: None }).unwrap()
            });
            assert_eq!(rows_c, rows_e);
            let scale = le.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = lc.iter().zip(&le).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            println!("{name} step {step}: cuda vs emu logits max |diff| {err:.3e} = {:.3e} × max", err / scale);
            assert!(err <= REL * scale, "{name} step {step}: cuda vs emu logits differ by {err} (max {scale})");
        }
        println!("{name}: {:?}", cuda.graph_stats());
    }
}

/// Fresh allocations are zeroed on the device's own stream: the next copy and download on that stream
/// see zeros, not the driver's uninitialised memory (a zeroing queued on the legacy default stream is not
/// waited for by the device's non-blocking stream).
fn cuda_fresh_buffers_read_as_zero() {
    fresh_buffers_read_as_zero(&mut CudaDevice::open().unwrap());
}

/// The cuda device refuses what CUDA refuses inside a stream capture, and the refusal invalidates the
/// capture, exactly as on the emu device (tests/emu_backend.rs runs the same check).
fn cuda_capture_refuses_what_cuda_refuses() {
    capture_rules_hold(&mut CudaDevice::open().unwrap());
}

fn cuda_buffers_never_grow_while_capturing() {
    growth_is_refused_while_capturing(&mut CudaDevice::open().unwrap());
}

/// The probe retains device 0's primary context once and keeps it: the devices opened afterwards share
/// it, and it stays active with no device open (released, the driver would reset it, and the next open
/// would create it again).
fn cuda_probe_and_devices_share_one_primary_context() {
    probe().unwrap();
    let a = CudaDevice::open().unwrap();
    let b = CudaDevice::open().unwrap();
    assert!(std::sync::Arc::ptr_eq(a.context(), b.context()), "two devices, two contexts");
    let cu_device = a.context().cu_device();
    drop((a, b));
    probe().unwrap();
    let (mut flags, mut active) = (0u32, 0i32);
    // SAFETY: the driver library is loaded (the probe succeeded); both out-pointers are valid.
    let r = unsafe { cudarc::driver::sys::cuDevicePrimaryCtxGetState(cu_device, &mut flags, &mut active) };
    assert_eq!(r, cudarc::driver::sys::CUresult::CUDA_SUCCESS);
    assert_eq!(active, 1, "the primary context was released (and reset) after the probe and the devices");
}

/// With the sync check on, a kernel that faults (here it reads through freed memory) fails at its own
/// launch, and the error names the kernel, its grid, block, shared memory and params. A device fault is
/// sticky: it ends the process's CUDA context, so the faulting half runs in a child process of its own
/// (this test binary, running only [`sync_check_fault_in_this_process`]), never beside the other tests.
fn cuda_sync_check_names_the_faulting_kernel() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sync_check_fault_in_this_process"])
        .env(FAULT_CHILD, "1")
        .output()
        .expect("run the faulting half in a child process");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "the faulting half failed:\n{text}");
}

fn sync_check_fault_in_this_process() {
    use latentmas::backend::gpu::{DevBuf, Device};
    use latentmas::kernels::RmsNormParams;
    let mut dev = CudaDevice::open().unwrap();
    dev.set_sync_check(true);
    let (rows, dim) = (4u32, 64u32);
    let weight = DevBuf::alloc(&mut dev, (dim * 2) as usize).unwrap();
    let out = DevBuf::alloc(&mut dev, (rows * dim * 2) as usize).unwrap();
    // A freed allocation (cuMemFree unmaps it): the emulated driver reports a read through it as an illegal
    // address, as the GPU does; a never-mapped address such as 256 would crash the host emulator instead.
    let freed = DevBuf::alloc(&mut dev, (rows * dim * 2) as usize).unwrap();
    let bogus = freed.addr();
    drop(freed);
    let p = RmsNormParams { x: bogus, weight: weight.addr(), out: out.addr(), rows, dim, eps: 1e-6, _pad: 0 };
    // SAFETY: deliberately not: `x` addresses freed memory; the sync check must catch the fault here.
    let err =
        unsafe { dev.launch(&p) }.expect_err("a launch reading unmapped memory passed the sync check").to_string();
    println!("{err}");
    for part in [
        "latentmas_rmsnorm",
        "grid [",
        "block [",
        "dynamic shared memory",
        &format!("x: {bogus}"),
        "LATENTMAS_CUDA_SYNC_CHECK",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

/// `latentmas run --device cuda --trace` equals `--device cpu` on the confident tiny-trained model: prompt ids,
/// KV lengths and generated ids of every agent, and as many fed latent vectors (their low bits differ: bf16).
fn cli_run_on_cuda_traces_like_cpu() {
    let dir = std::env::temp_dir().join(format!("lm-cuda-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut traces = Vec::new();
    for device in ["cpu", "cuda"] {
        let path = dir.join(format!("trace_{device}.json"));
        let out = std::process::Command::new(latentmas_bin())
            .args(["run", "--model", "tests/data/tiny-trained", "--question", "What is 12 plus 30?"])
            .args(["--method", "latent", "--latent-steps", "3", "--max-new-tokens", "12", "--device", device])
            .arg("--trace")
            .arg(&path)
            .output()
            .expect("run latentmas");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--device {device} failed:\n{err}");
        if device == "cuda" {
            assert!(!err.contains("falling back"), "{err}");
        }
        traces.push(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap()).unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (c, g) = (traces[0]["agents"].as_array().unwrap(), traces[1]["agents"].as_array().unwrap());
    assert_eq!(c.len(), g.len());
    for (x, y) in c.iter().zip(g) {
        for key in ["role", "prompt_ids", "kv_len_before", "kv_len_after", "generated_ids"] {
            assert_eq!(x[key], y[key], "{key}");
        }
        assert_eq!(x["latent_inputs"].as_array().map(|a| a.len()), y["latent_inputs"].as_array().map(|a| a.len()));
    }
    assert!(c.last().unwrap()["generated_ids"].as_array().is_some_and(|a| !a.is_empty()));
}

/// The CLI: the one cargo built, or `bin/latentmas` of the GPU bundle (tools/gpu_bundle.sh), run from its folder.
fn latentmas_bin() -> std::path::PathBuf {
    let built = std::path::PathBuf::from(env!("CARGO_BIN_EXE_latentmas"));
    if built.exists() {
        built
    } else {
        std::path::PathBuf::from("bin/latentmas")
    }
}
