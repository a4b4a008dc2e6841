//! The `emu` device (the cuda backend's op sequence, bf16 layout, kernels and graphs, run by the host
//! emulator) against transformers' goldens and the cpu backend. The checks and their tolerances live in
//! tests/gpu_checks/ (shared with crates/cli/tests/cuda_backend.rs, which runs them on a GPU).

mod common;
mod gpu_checks;

use gpu_checks::*;
use latentmas::backend::emu::new_emu_model;
use latentmas::engine::DeviceKind;

#[test]
fn emu_prefill_and_decode_match_golden() {
    check_prefill_and_decode("tiny-tied", new_emu_model);
    check_prefill_and_decode("tiny-untied", new_emu_model);
}

#[test]
fn emu_embeddings_input_matches_golden() {
    check_embeddings_input("tiny-tied", new_emu_model);
    check_embeddings_input("tiny-untied", new_emu_model);
}

#[test]
fn emu_greedy_matches_golden_where_the_margin_allows() {
    check_greedy("tiny-tied", new_emu_model);
    check_greedy("tiny-untied", new_emu_model);
}

#[test]
fn emu_mixed_batch_matches_cpu() {
    check_mixed_batch("tiny-tied", new_emu_model);
    check_mixed_batch("tiny-untied", new_emu_model);
}

#[test]
fn emu_bf16_checkpoint_matches_cpu() {
    bf16_checkpoint_matches_cpu(new_emu_model);
}

#[test]
fn emu_latentmas_runs_match_cpu_traces() {
    latentmas_runs_match_cpu_traces(DeviceKind::Emu);
}

#[test]
fn emu_engine_phases_match_cpu_where_the_margin_allows() {
    engine_phases_match_cpu_where_the_margin_allows(DeviceKind::Emu);
}

#[test]
fn emu_graph_replays_equal_eager_runs() {
    graph_replays_equal_eager_runs(DeviceKind::Emu);
}

#[test]
fn emu_equals_cpu_token_for_token_on_the_trained_tiny_model() {
    trained_model_runs_equal_cpu_token_for_token(DeviceKind::Emu);
}

/// Every kernel microbenchmark case (benches/ops.rs times them on a GPU) launches cleanly on the emu device
/// at the tiny model's shape: params accepted by the planners, buffers large enough for the kernels.
#[test]
fn kernel_microbench_cases_run_on_emu() {
    use latentmas::backend::emu::HostDevice;
    use latentmas::backend::gpu::{microbench::kernel_cases, Device};
    let cfg = model("tiny-tied").config;
    let mut dev = HostDevice::new();
    let cases = kernel_cases(&mut dev, &cfg, 24, 40, 3).unwrap();
    for case in &cases {
        case.launch(&mut dev).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(case.bytes > 0, "{}", case.name);
    }
    dev.synchronize().unwrap();
    assert_eq!(cases.len(), 13, "{:?}", cases.iter().map(|c| &c.name).collect::<Vec<_>>());
}

#[test]
fn emu_device_sampling_equals_host_sampling() {
    device_sampling_equals_host_sampling(DeviceKind::Emu);
}

#[test]
fn emu_fresh_buffers_read_as_zero() {
    fresh_buffers_read_as_zero(&mut latentmas::backend::emu::HostDevice::new());
}

#[test]
fn emu_capture_refuses_what_cuda_refuses() {
    capture_rules_hold(&mut latentmas::backend::emu::HostDevice::new());
}

#[test]
fn emu_buffers_never_grow_while_capturing() {
    growth_is_refused_while_capturing(&mut latentmas::backend::emu::HostDevice::new());
}

/// A faulting kernel (the emulator's planted `__trap`) is reported with its kernel, grid, block, dynamic
/// shared memory and params, eagerly and when it faults inside a graph replay.
#[test]
fn emu_failing_launch_names_kernel_grid_block_and_params() {
    use latentmas::backend::emu::HostDevice;
    use latentmas::backend::gpu::{DevBuf, Device};
    use latentmas::kernels::{emu::test_variant, EmuTestParams};
    let mut dev = HostDevice::new();
    let out = DevBuf::alloc(&mut dev, 64 * 4).unwrap();
    let p = EmuTestParams { out: out.addr(), variant: test_variant::TRAP, _pad: 0 };
    let check = |err: String| {
        for part in ["lmas_selftest_trap", "grid [1, 1, 1]", "block [64, 1, 1]", "0 B dynamic shared memory"] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
        assert!(err.contains(&format!("params EmuTestParams {{ out: {}, variant: 8", out.addr())), "{err}");
    };
    // SAFETY: `out` holds the 64 f32 the self-test kernel writes.
    check(unsafe { dev.launch(&p) }.unwrap_err().to_string());
    dev.begin_capture().unwrap();
    // SAFETY: as above; recorded, run at the replay.
    unsafe { dev.launch(&p) }.unwrap();
    let graph = dev.end_capture().unwrap();
    check(dev.replay(&graph).unwrap_err().to_string());
}

#[test]
fn sync_check_switch_reads_off_and_on() {
    use latentmas::backend::gpu::switch_on;
    for off in [None, Some(""), Some("0"), Some("false"), Some("OFF"), Some(" no ")] {
        assert!(!switch_on(off), "{off:?}");
    }
    for on in [Some("1"), Some("true"), Some("yes"), Some("on")] {
        assert!(switch_on(on), "{on:?}");
    }
}
