//! Every CUDA kernel of `crates/kernels/cuda/`, executed on the CPU by the host emulator from the very same source,
//! against its cpu twin (src/backend/cpu, src/kv.rs, or a twin written out below), plus one negative test
//! per emulator check.
//!
//! How a kernel test works:
//! - inputs are random values rounded to bf16 (the kernels store bf16); the twin gets the same values
//!   widened to f32, so the only differences are f32 evaluation order, the GPU-style approximations
//!   (rsqrtf, exp2f), and the kernel's final rounding to bf16;
//! - every buffer sits between 64-byte canaries (a write out of bounds is reported) and outputs start as
//!   0xFF bytes (NaN), so an output element the kernel forgets to write, or one computed from
//!   uninitialised (NaN-poisoned) shared memory, fails the comparison;
//! - each launch runs twice, resuming fibers in forward and in reverse thread order, and the two results
//!   must agree bit for bit (a race between barriers changes what a thread reads). Under the ThreadSanitizer
//!   build (`LATENTMAS_EMU_TSAN=1`) every CUDA thread is an OS thread and TSan reports races as errors.
//!
//! Tolerances (per element, `got` = kernel, `want` = twin in f32 on the same bf16 inputs):
//! - BF16: `|got - want| <= 2^-8 * |want| + abs`. The kernel rounds its f32 result to bf16 once, which moves
//!   it by at most half a bf16 ulp = 2^-9 relative; a result within f32 noise of a rounding boundary can go
//!   either way, hence one full ulp (2^-8). `abs` covers f32 noise on values that cancel (RoPE, attention
//!   outputs): it is stated per test relative to the data's scale.
//! - Exact: copies (embedding, V cache, splice), the rounded residual and argmax are bit-exact.
//! - Sampling: the sampled id must equal the twin's (f64) unless u * Z lies within 1e-4 (relative) of a
//!   CDF boundary or p * Z within 1e-4 of a top-p boundary, where the neighbouring choice is accepted.
//!
//! A failing case prints every parameter; rerun one test with `cargo test --test kernels_emu <name>`.

use std::fmt::Debug;
use std::marker::PhantomData;

use bytemuck::Pod;
use half::bf16;

use latentmas::backend::cpu::{
    activation::swiglu,
    attention::{attention, AttnShape, AttnSpan},
    matmul::matmul,
    norm::{add_rms_norm, rms_norm},
    qk::{qk_norm_rope_write_kv, QkvShape},
    rope,
};
use latentmas::kernels::emu::{self, test_variant, EmuError, EmuErrorKind, Mode, Options, Schedule};
use latentmas::kernels::*;
use latentmas::kv::{KvBudget, KvBuffer};
use latentmas::model::config::Qwen3Config;
use latentmas::model::matrix::WeightMatrix;

const BF16_REL: f32 = 1.0 / 256.0;

// ------------------------------------------------------------------------------------------------------
// buffers, random data, checks
// ------------------------------------------------------------------------------------------------------

const GUARD: usize = 64;
const CANARY: u8 = 0xA5;

/// A device-like buffer in host memory: `len` elements of T between two 64-byte canaries, optionally
/// misaligned by `misalign` elements (to exercise the kernels' scalar paths).
struct Buf<T: Pod> {
    mem: Vec<u128>,
    start: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Buf<T> {
    fn with_fill(len: usize, misalign: usize, fill: u8) -> Self {
        let size = std::mem::size_of::<T>();
        let start = GUARD + misalign * size;
        let total = start + len * size + GUARD;
        let mut b = Buf { mem: vec![0u128; total.div_ceil(16)], start, len, _t: PhantomData };
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut b.mem);
        bytes.fill(CANARY);
        bytes[start..start + len * size].fill(fill);
        b
    }
    fn from_slice(v: &[T], misalign: usize) -> Self {
        let mut b = Self::with_fill(v.len(), misalign, 0);
        b.as_mut_slice().copy_from_slice(v);
        b
    }
    /// Output buffer: every byte 0xFF (NaN as f32 or bf16).
    fn poisoned(len: usize, misalign: usize) -> Self {
        Self::with_fill(len, misalign, 0xFF)
    }
    fn zeroed(len: usize) -> Self {
        Self::with_fill(len, 0, 0)
    }
    fn data_bytes(&self) -> &[u8] {
        let size = std::mem::size_of::<T>();
        &bytemuck::cast_slice::<u128, u8>(&self.mem)[self.start..self.start + self.len * size]
    }
    fn as_slice(&self) -> &[T] {
        bytemuck::cast_slice(self.data_bytes())
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        let size = std::mem::size_of::<T>();
        let (s, l) = (self.start, self.len);
        bytemuck::cast_slice_mut(&mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.mem)[s..s + l * size])
    }
    /// The address the kernels get.
    fn dp(&mut self) -> DevPtr {
        // SAFETY: start is inside the allocation (or one past it for len 0).
        unsafe { (self.mem.as_mut_ptr() as *mut u8).add(self.start) as DevPtr }
    }
    fn check_guards(&self, name: &str, case: &dyn Debug) {
        let size = std::mem::size_of::<T>();
        let bytes: &[u8] = bytemuck::cast_slice(&self.mem);
        let end = self.start + self.len * size;
        let bad = bytes[..self.start].iter().chain(&bytes[end..]).position(|&b| b != CANARY);
        assert!(
            bad.is_none(),
            "{name}: a kernel wrote outside the buffer (canary byte {bad:?} changed)\ncase: {case:#?}"
        );
    }
}

/// Deterministic xorshift64* generator.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-a, a).
    fn sym(&mut self, a: f32) -> f32 {
        (self.unit() * 2.0 - 1.0) * a
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym(a)).collect()
    }
}

fn to_bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
}
fn from_bf16_bits(v: &[u16]) -> Vec<f32> {
    v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}
/// Rounds to bf16 and back: the value a bf16 buffer holds.
fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// `|got - want| <= rel * |want| + abs` for every element; on failure prints the case and the worst elements.
fn check_close(what: &str, case: &dyn Debug, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length\ncase: {case:#?}");
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= rel * w.abs() + abs; // false for NaN
        if !ok {
            bad.push((i, g, w));
        }
    }
    if !bad.is_empty() {
        let show: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, g, w)| format!("[{i}] got {g:e} want {w:e} (diff {:e})", (g - w).abs()))
            .collect();
        panic!(
            "{what}: {} of {} elements outside |got - want| <= {rel:e}·|want| + {abs:e}:\n  {}\ncase: {case:#?}",
            bad.len(),
            got.len(),
            show.join("\n  ")
        );
    }
}

fn check_exact<T: PartialEq + Debug>(what: &str, case: &dyn Debug, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: length\ncase: {case:#?}");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: element {i} is {:?}, want {:?} (bit-exact)\ncase: {case:#?}", got[i], want[i]);
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn tsan_build() -> bool {
    emu::build_info().tsan
}

/// The cases a test runs, with their index (seeds stay stable): all of them, or under ThreadSanitizer (every
/// CUDA thread an OS thread, ~10x slower) the listed subset, chosen to cover each code path once.
fn cases<T: Copy>(all: &[T], tsan_subset: &[usize]) -> Vec<(usize, T)> {
    if tsan_build() {
        tsan_subset.iter().map(|&i| (i, all[i])).collect()
    } else {
        all.iter().copied().enumerate().collect()
    }
}

/// Runs an op on fresh state from `make` once per fiber schedule (forward, reverse) and requires the
/// snapshots (`out`) to agree bit for bit; returns the forward run's state. Under TSan (threads mode, where
/// TSan itself watches for races) it runs once.
fn run_checked<S>(
    case: &dyn Debug,
    make: impl Fn() -> S,
    launch: impl Fn(&mut S, Options) -> Result<(), EmuError>,
    out: impl Fn(&S) -> Vec<u8>,
) -> S {
    let schedules: &[Schedule] =
        if tsan_build() { &[Schedule::Forward] } else { &[Schedule::Forward, Schedule::Reverse] };
    let mut first: Option<(S, Vec<u8>)> = None;
    for &schedule in schedules {
        let mut s = make();
        if let Err(e) = launch(&mut s, Options { mode: Mode::Auto, schedule }) {
            panic!("emulated launch failed ({schedule:?} schedule): {e}\ncase: {case:#?}");
        }
        let snap = out(&s);
        match &first {
            None => first = Some((s, snap)),
            Some((_, f)) => {
                if let Some(i) = f.iter().zip(&snap).position(|(a, b)| a != b) {
                    panic!(
                        "output depends on the thread schedule (byte {i}: forward {:#04x}, reverse {:#04x}): a race \
                         between barriers\ncase: {case:#?}",
                        f[i], snap[i]
                    );
                }
            }
        }
    }
    first.expect("one run").0
}

fn bytes<T: Pod>(b: &Buf<T>) -> Vec<u8> {
    b.data_bytes().to_vec()
}

// ------------------------------------------------------------------------------------------------------
// emulator self-tests: every check catches its planted bug
// ------------------------------------------------------------------------------------------------------

fn selftest(variant: u32, mode: Mode, schedule: Schedule) -> (Result<(), EmuError>, Vec<f32>) {
    let mut out = Buf::<f32>::poisoned(64, 0);
    let p = EmuTestParams { out: out.dp(), variant, _pad: 0 };
    // SAFETY: the selftest kernels write at most out[0..64).
    let r = unsafe { emu::emulate(&p, Options { mode, schedule }) };
    out.check_guards("out", &variant);
    (r, out.as_slice().to_vec())
}

fn expect_error(variant: u32, mode: Mode, kind: EmuErrorKind, needle: &str) {
    let (r, _) = selftest(variant, mode, Schedule::Forward);
    let e = r.expect_err(&format!("variant {variant} in {mode:?} mode must fail with {kind:?}"));
    assert_eq!(e.kind, kind, "variant {variant}, {mode:?}: {e}");
    assert!(e.message.contains(needle), "variant {variant}, {mode:?}: message lacks {needle:?}: {e}");
}

fn modes() -> Vec<Mode> {
    // the TSan build runs threads only; the normal build checks both schedulers
    if tsan_build() {
        vec![Mode::Threads]
    } else {
        vec![Mode::Fibers, Mode::Threads]
    }
}

#[test]
fn emu_catches_bad_shuffle_masks() {
    for mode in modes() {
        expect_error(test_variant::MASK_MISSING, mode, EmuErrorKind::BadWarpSync, "do not exist");
        expect_error(test_variant::MASK_EXITED, mode, EmuErrorKind::BadWarpSync, "exited");
    }
}

#[test]
fn emu_catches_deadlock_and_divergent_barriers() {
    for mode in modes() {
        expect_error(test_variant::DEADLOCK, mode, EmuErrorKind::Deadlock, "wait at __syncthreads");
        expect_error(test_variant::DIVERGENT, mode, EmuErrorKind::BarrierDivergence, "divergent __syncthreads");
        expect_error(test_variant::EARLY_EXIT, mode, EmuErrorKind::BarrierDivergence, "exited");
    }
}

#[test]
fn emu_catches_shared_overflow_and_trap() {
    for mode in modes() {
        expect_error(test_variant::DYN_OVERFLOW, mode, EmuErrorKind::SharedOverflow, "dynamic shared memory");
        expect_error(test_variant::TRAP, mode, EmuErrorKind::Trap, "thread 3");
    }
}

#[test]
fn emu_poisons_uninitialised_shared_memory() {
    for mode in modes() {
        let (r, out) = selftest(test_variant::UNINIT_SHARED, mode, Schedule::Forward);
        r.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        for (i, v) in out.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(*v, i as f32, "{mode:?}: even threads wrote their slot");
            } else {
                assert!(
                    v.is_nan(),
                    "{mode:?}: thread {i} read an unwritten shared slot and must see NaN poison, got {v}"
                );
            }
        }
    }
}

#[test]
fn emu_catches_planted_race() {
    if tsan_build() {
        // ThreadSanitizer sees thread 0's write and the other threads' reads without a barrier between them
        let (r, _) = selftest(test_variant::RACE, Mode::Threads, Schedule::Forward);
        let e = r.expect_err("TSan must report the planted race");
        assert_eq!(e.kind, EmuErrorKind::DataRace, "{e}");
        let (r, out) = selftest(test_variant::RACE_FIXED, Mode::Threads, Schedule::Forward);
        r.unwrap_or_else(|e| panic!("the fixed kernel must be race-free: {e}"));
        assert!(out.iter().all(|&v| v == 42.0));
    } else {
        // fibers: the forward schedule happens to run the writer first and hides the race; the reverse
        // schedule runs the readers first, which read the NaN poison: the outputs differ
        let (r, fwd) = selftest(test_variant::RACE, Mode::Fibers, Schedule::Forward);
        r.unwrap();
        let (r, rev) = selftest(test_variant::RACE, Mode::Fibers, Schedule::Reverse);
        r.unwrap();
        assert!(fwd.iter().all(|&v| v == 42.0), "forward: {fwd:?}");
        assert!(rev[1..].iter().all(|v| v.is_nan()), "reverse must expose the race: {rev:?}");
        for schedule in [Schedule::Forward, Schedule::Reverse] {
            let (r, out) = selftest(test_variant::RACE_FIXED, Mode::Fibers, schedule);
            r.unwrap();
            assert!(out.iter().all(|&v| v == 42.0), "{schedule:?}: {out:?}");
        }
    }
}

#[test]
fn emu_infrastructure_facts() {
    // the C layout of every params struct equals its Rust mirror
    use std::collections::HashMap;
    use std::mem::{align_of, offset_of, size_of};
    let c: HashMap<(String, String), (u64, u64)> =
        emu::layout_table().into_iter().map(|(s, n, v, z)| ((s, n), (v, z))).collect();
    let mut checked = 0;
    let mut check = |scope: &str, name: &str, value: u64, size: u64| {
        let got = c.get(&(scope.to_string(), name.to_string())).copied();
        assert_eq!(got, Some((value, size)), "{scope}.{name}: C (value, size) vs Rust");
        checked += 1;
    };
    macro_rules! s {
        ($c:literal, $t:ty) => {
            check($c, "", size_of::<$t>() as u64, align_of::<$t>() as u64)
        };
    }
    macro_rules! f {
        ($c:literal, $t:ty, $($f:ident),*) => {{
            $(
                let v: $t = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of_val(&v.$f) as u64;
                check($c, stringify!($f), offset_of!($t, $f) as u64, size);
            )*
        }};
    }
    macro_rules! k {
        ($($c:literal = $v:expr),*) => {{ $( check("const", $c, $v as u64, 0); )* }};
    }
    k!(
        "LMAS_RMSNORM_THREADS" = RMSNORM_THREADS,
        "LMAS_QK_THREADS" = QK_THREADS,
        "LMAS_ATTN_THREADS" = ATTN_THREADS,
        "LMAS_ATTN_BK" = ATTN_BK,
        "LMAS_ATTN_QB" = ATTN_QB,
        "LMAS_ATTN_QW" = ATTN_QW,
        "LMAS_MAX_HEAD_DIM" = MAX_HEAD_DIM,
        "LMAS_DECODE_CHUNK" = DECODE_CHUNK,
        "LMAS_STREAM_THREADS" = STREAM_THREADS,
        "LMAS_LATENT_THREADS" = LATENT_THREADS,
        "LMAS_LATENT_MAX_ROWS" = LATENT_MAX_ROWS,
        "LMAS_SAMPLE_THREADS" = SAMPLE_THREADS,
        "LMAS_MAX_LAUNCHES" = MAX_LAUNCHES,
        "LMAS_PLAN_ERROR_LEN" = PLAN_ERROR_LEN,
        "LMAS_EMU_MESSAGE_LEN" = EMU_MESSAGE_LEN
    );
    s!("LmasLaunch", RawLaunch);
    f!("LmasLaunch", RawLaunch, kernel, grid, block, shared_bytes);
    s!("LmasPlan", RawPlan);
    f!("LmasPlan", RawPlan, n_launches, launches, workspace_bytes, error);
    s!("LmasRow", Row);
    f!("LmasRow", Row, q_start, q_len, slot_base, past_len, pos_base);
    s!("LmasRmsNormParams", RmsNormParams);
    f!("LmasRmsNormParams", RmsNormParams, x, weight, out, rows, dim, eps);
    s!("LmasAddRmsNormParams", AddRmsNormParams);
    f!("LmasAddRmsNormParams", AddRmsNormParams, residual, delta, weight, out, rows, dim, eps);
    s!("LmasQkNormRopeParams", QkNormRopeParams);
    f!(
        "LmasQkNormRopeParams",
        QkNormRopeParams,
        qkv,
        q_norm,
        k_norm,
        inv_freq,
        k_cache,
        v_cache,
        rows,
        n_rows,
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        n_slots,
        eps
    );
    s!("LmasAttnParams", AttnParams);
    f!(
        "LmasAttnParams",
        AttnParams,
        q,
        k_cache,
        v_cache,
        out,
        rows,
        workspace,
        n_rows,
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        q_stride,
        max_q_len,
        max_kv_len,
        scale
    );
    s!("LmasSwigluParams", SwigluParams);
    f!("LmasSwigluParams", SwigluParams, gate_up, out, n, inter);
    s!("LmasEmbedParams", EmbedParams);
    f!("LmasEmbedParams", EmbedParams, ids, out_rows, table, out, n, dim, vocab);
    s!("LmasLatentParams", LatentParams);
    f!("LmasLatentParams", LatentParams, h, in_rows, w_a_t, out, out_rows, workspace, n_rows, dim, target_norm);
    s!("LmasSpliceOp", SpliceOp);
    f!("LmasSpliceOp", SpliceOp, src, dst, len);
    s!("LmasSpliceParams", SpliceParams);
    f!("LmasSpliceParams", SpliceParams, kv, ops, n_ops, n_layers, n_slots, kv_width);
    s!("LmasArgmaxParams", ArgmaxParams);
    f!("LmasArgmaxParams", ArgmaxParams, logits, out, n_rows, stride, vocab_limit);
    s!("LmasSampleParams", SampleParams);
    f!("LmasSampleParams", SampleParams, logits, uniform, out, n_rows, stride, vocab_limit, top_k, temperature, top_p);
    s!("LmasEmuOptions", RawEmuOptions);
    f!("LmasEmuOptions", RawEmuOptions, mode, schedule);
    s!("LmasEmuError", RawEmuError);
    f!("LmasEmuError", RawEmuError, code, mode_used, message);
    s!("LmasEmuTestParams", EmuTestParams);
    f!("LmasEmuTestParams", EmuTestParams, out, variant);
    assert_eq!(checked, c.len(), "every entry of the C layout table has a Rust counterpart");

    // bf16: the fallback conversions are bit-exact with cuda_bf16.h (when this build has it)
    let info = emu::build_info();
    match emu::bf16_selfcheck() {
        Some(bad) => assert_eq!(bad, 0, "fallback bf16 conversions disagree with cuda_bf16.h"),
        None => assert!(!info.cuda_bf16),
    }

    // the fatbin and its report: present iff nvcc was found
    if KERNELS_STATUS.is_empty() {
        let fb = fatbin().expect("built with nvcc");
        assert_eq!(&fb[..4], &[0x50, 0xED, 0x55, 0xBA], "fatbin magic");
        let report = kernel_report();
        let names = [
            "latentmas_add_rmsnorm",
            "latentmas_argmax",
            "latentmas_attn_decode_merge",
            "latentmas_attn_decode_partial",
            "latentmas_attn_prefill",
            "latentmas_embed",
            "latentmas_kv_splice",
            "latentmas_latent_project",
            "latentmas_qk_norm_rope_kv",
            "latentmas_rmsnorm",
            "latentmas_sample",
            "latentmas_swiglu",
        ];
        for n in names {
            for arch in ["sm_80", "sm_90a"] {
                let k = report.iter().find(|k| k.name == n && k.arch == arch);
                let k = k.unwrap_or_else(|| panic!("{n} for {arch} missing from the ptxas report"));
                assert_eq!((k.spill_stores, k.spill_loads), (0, 0), "{n} ({arch}) spills");
                assert!(k.registers > 0 && k.registers <= 255, "{n}: {} registers", k.registers);
            }
        }
        assert_eq!(report.len(), names.len() * 2, "unexpected kernels: {report:?}");
    } else {
        let e = fatbin().unwrap_err().to_string();
        assert!(e.contains("install_cuda.sh"), "{e}");
        assert!(kernel_report().is_empty());
    }
}

#[test]
fn planners_refuse_bad_params() {
    let attn = AttnParams {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 7,
        q_stride: 28,
        n_rows: 1,
        max_q_len: 1,
        max_kv_len: 1,
        ..Default::default()
    };
    assert!(AttnPrefill(attn).plan().unwrap_err().to_string().contains("head_dim 7"));
    let attn = AttnParams { head_dim: 8, n_heads: 3, q_stride: 24, ..attn };
    assert!(AttnDecode(attn).plan().unwrap_err().to_string().contains("multiple of n_kv_heads"));
    let attn = AttnParams { n_heads: 64, n_kv_heads: 2, q_stride: 512, ..attn };
    assert!(AttnPrefill(attn).plan().unwrap_err().to_string().contains("group of at most 16"));
    let lat = LatentParams { n_rows: 9, dim: 8, ..Default::default() };
    assert!(lat.plan().unwrap_err().to_string().contains("9 rows"));
    let s = SampleParams { n_rows: 1, stride: 10, vocab_limit: 11, top_p: 1.0, temperature: 1.0, ..Default::default() };
    assert!(s.plan().unwrap_err().to_string().contains("vocab_limit 11"));
    let s = SampleParams { vocab_limit: 10, top_p: 0.0, ..s };
    assert!(s.plan().unwrap_err().to_string().contains("top_p"));
    // nothing to do is an empty plan, not an error
    assert!(RmsNormParams { rows: 0, dim: 8, ..Default::default() }.plan().unwrap().launches.is_empty());
    // decode = partial + merge with a workspace
    let d = AttnDecode(AttnParams {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        q_stride: 32,
        n_rows: 3,
        max_kv_len: 600,
        ..Default::default()
    })
    .plan()
    .unwrap();
    assert_eq!(d.launches.len(), 2);
    assert_eq!(d.launches[0].grid, [3, 3, 2]);
    assert_eq!(d.workspace_bytes, 3 * 3 * 4 * (8 + 2) * 4);
}

// ------------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------------

#[derive(Debug)]
#[allow(dead_code)] // fields are printed on failure
struct NormCase {
    rows: usize,
    dim: usize,
    misalign: usize,
    eps: f32,
    seed: u64,
}

#[test]
fn a_read_through_an_unmapped_address_is_an_illegal_address_error() {
    let dim = 64;
    let mut w = Buf::<u16>::from_slice(&vec![0x3F80; dim], 0);
    let mut out = Buf::<u16>::poisoned(dim, 0);
    // Page 1: below Linux's mmap_min_addr, so never mapped in any process.
    let p = RmsNormParams { x: 0x1000, weight: w.dp(), out: out.dp(), rows: 1, dim: dim as u32, eps: 1e-6, _pad: 0 };
    for mode in [Mode::Fibers, Mode::Threads] {
        // SAFETY: the one bad pointer is the point of the test; the emulator catches the fault.
        let e = unsafe { emu::emulate(&p, Options { mode, ..Options::default() }) }.unwrap_err();
        assert_eq!(e.kind, EmuErrorKind::IllegalAddress, "{mode:?}: {e}");
    }
}

#[test]
fn rmsnorm_matches_cpu() {
    let cases_all =
        [(1, 1, 0), (3, 37, 0), (2, 64, 0), (2, 64, 1), (5, 1024, 0), (1, 2056, 0), (4, 100, 0), (2, 3000, 3)];
    for (i, (rows, dim, misalign)) in cases(&cases_all, &[1, 3, 4]) {
        let case = NormCase { rows, dim, misalign, eps: 1e-6, seed: i as u64 };
        let mut rng = Rng::new(case.seed);
        let x = round_bf16(&rng.vec(rows * dim, 2.0));
        let w = round_bf16(&(0..dim).map(|_| 0.5 + rng.unit()).collect::<Vec<_>>());
        let res = run_checked(
            &case,
            || {
                (
                    Buf::<u16>::from_slice(&to_bf16_bits(&x), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&w), misalign),
                    Buf::<u16>::poisoned(rows * dim, misalign),
                )
            },
            |(xb, wb, ob), opts| {
                let p = RmsNormParams {
                    x: xb.dp(),
                    weight: wb.dp(),
                    out: ob.dp(),
                    rows: rows as u32,
                    dim: dim as u32,
                    eps: case.eps,
                    _pad: 0,
                };
                // SAFETY: x, out are [rows, dim], weight [dim].
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, _, ob)| bytes(ob),
        );
        res.2.check_guards("out", &case);
        let mut want = vec![0f32; rows * dim];
        rms_norm(&x, &w, case.eps, &mut want);
        check_close("rmsnorm out", &case, &from_bf16_bits(res.2.as_slice()), &want, BF16_REL, 1e-6);
    }
}

#[test]
fn add_rmsnorm_matches_cpu() {
    let cases_all = [(1, 1, 0), (3, 37, 0), (2, 64, 0), (2, 64, 1), (5, 1024, 0), (3, 520, 0)];
    for (i, (rows, dim, misalign)) in cases(&cases_all, &[1, 3, 4]) {
        let case = NormCase { rows, dim, misalign, eps: 1e-6, seed: 100 + i as u64 };
        let mut rng = Rng::new(case.seed);
        let r0 = round_bf16(&rng.vec(rows * dim, 3.0));
        let d0 = round_bf16(&rng.vec(rows * dim, 1.0));
        let w = round_bf16(&(0..dim).map(|_| 0.5 + rng.unit()).collect::<Vec<_>>());
        let res = run_checked(
            &case,
            || {
                (
                    Buf::<u16>::from_slice(&to_bf16_bits(&r0), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&d0), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&w), misalign),
                    Buf::<u16>::poisoned(rows * dim, misalign),
                )
            },
            |(rb, db, wb, ob), opts| {
                let p = AddRmsNormParams {
                    residual: rb.dp(),
                    delta: db.dp(),
                    weight: wb.dp(),
                    out: ob.dp(),
                    rows: rows as u32,
                    dim: dim as u32,
                    eps: case.eps,
                    _pad: 0,
                };
                // SAFETY: residual, delta, out are [rows, dim], weight [dim].
                unsafe { emu::emulate(&p, opts) }
            },
            |(rb, _, _, ob)| [bytes(rb), bytes(ob)].concat(),
        );
        res.0.check_guards("residual", &case);
        res.3.check_guards("out", &case);
        // the twin's f32 residual, rounded as the kernel stores it: bit-exact
        let mut resid = r0.clone();
        let mut twin_out = vec![0f32; rows * dim];
        add_rms_norm(&mut resid, &d0, &w, case.eps, &mut twin_out);
        check_exact("residual", &case, res.0.as_slice(), &to_bf16_bits(&resid));
        // out is normalised from the stored (rounded) residual, as a bf16 model does
        let mut want = vec![0f32; rows * dim];
        rms_norm(&round_bf16(&resid), &w, case.eps, &mut want);
        check_close("add_rmsnorm out", &case, &from_bf16_bits(res.3.as_slice()), &want, BF16_REL, 1e-6);
    }
}

// ------------------------------------------------------------------------------------------------------
// rows of a batch (qk/rope and attention)
// ------------------------------------------------------------------------------------------------------

/// Lays rows out in a buffer of `n_slots` slots with gaps between them; (past_len, q_len) per row.
fn make_rows(rng: &mut Rng, spec: &[(u32, u32)], gap: u32) -> (Vec<Row>, u32) {
    let mut rows = Vec::new();
    let (mut slot, mut tok) = (gap, 0u32);
    for &(past, q) in spec {
        let pos_base = rng.below(3) as u32 * 17; // sub-rows of the parallel topology start at later positions
        rows.push(Row { q_start: tok, q_len: q, slot_base: slot, past_len: past, pos_base, _pad: 0 });
        slot += past + q + gap;
        tok += q;
    }
    (rows, slot)
}

/// Per-token (slot, position, span) of the rows' new tokens, in token order.
fn token_layout(rows: &[Row]) -> Vec<(usize, usize, AttnSpan)> {
    let mut v = Vec::new();
    for r in rows {
        for j in 0..r.q_len {
            let slot = (r.slot_base + r.past_len + j) as usize;
            let pos = (r.pos_base + r.past_len + j) as usize;
            v.push((slot, pos, AttnSpan { slot_base: r.slot_base as usize, len: (r.past_len + j + 1) as usize }));
        }
    }
    v
}

// ------------------------------------------------------------------------------------------------------
// q/k norm + RoPE + KV write
// ------------------------------------------------------------------------------------------------------

#[derive(Debug)]
#[allow(dead_code)]
struct QkCase {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rows: Vec<Row>,
    n_slots: u32,
    misalign: usize,
    seed: u64,
}

#[test]
fn qk_norm_rope_kv_matches_cpu() {
    let shapes = [
        (2, 2, 8, 0),
        (4, 2, 16, 0),
        (8, 2, 64, 0),
        (8, 1, 128, 0),
        (3, 3, 6, 0),
        (4, 1, 10, 0),
        (4, 2, 64, 1),
        (2, 1, 256, 0),
    ];
    for (i, (h, kvh, d, misalign)) in cases(&shapes, &[3, 4, 6]) {
        let mut rng = Rng::new(200 + i as u64);
        let spec: &[(u32, u32)] =
            if i % 2 == 0 { &[(0, 5), (3, 1), (7, 0), (0, 1), (40, 3)] } else { &[(9, 2), (0, 11)] };
        let (rows, n_slots) = make_rows(&mut rng, spec, 2);
        let case = QkCase {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            rows: rows.clone(),
            n_slots,
            misalign,
            seed: 200 + i as u64,
        };
        let toks = token_layout(&rows);
        let n = toks.len();
        let shape = QkvShape { n_heads: h, n_kv_heads: kvh, head_dim: d };
        let width = shape.width();
        let kv_w = kvh * d;
        let qkv = round_bf16(&rng.vec(n * width, 2.0));
        let qn = round_bf16(&(0..d).map(|_| 0.5 + rng.unit()).collect::<Vec<_>>());
        let kn = round_bf16(&(0..d).map(|_| 0.5 + rng.unit()).collect::<Vec<_>>());
        let kc0 = round_bf16(&rng.vec(n_slots as usize * kv_w, 1.0));
        let vc0 = round_bf16(&rng.vec(n_slots as usize * kv_w, 1.0));
        let inv_freq = rope::inv_freq(d, 1e6);
        let eps = 1e-6f32;
        let res = run_checked(
            &case,
            || {
                (
                    Buf::<u16>::from_slice(&to_bf16_bits(&qkv), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&qn), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&kn), misalign),
                    Buf::<f32>::from_slice(&inv_freq, 0),
                    Buf::<u16>::from_slice(&to_bf16_bits(&kc0), misalign),
                    Buf::<u16>::from_slice(&to_bf16_bits(&vc0), misalign),
                    Buf::<Row>::from_slice(&rows, 0),
                )
            },
            |(q, qnb, knb, fb, kc, vc, rb), opts| {
                let p = QkNormRopeParams {
                    qkv: q.dp(),
                    q_norm: qnb.dp(),
                    k_norm: knb.dp(),
                    inv_freq: fb.dp(),
                    k_cache: kc.dp(),
                    v_cache: vc.dp(),
                    rows: rb.dp(),
                    n_rows: rows.len() as u32,
                    n_tokens: n as u32,
                    n_heads: h as u32,
                    n_kv_heads: kvh as u32,
                    head_dim: d as u32,
                    n_slots,
                    eps,
                    _pad: 0,
                };
                // SAFETY: buffers sized per the params.
                unsafe { emu::emulate(&p, opts) }
            },
            |(q, _, _, _, kc, vc, _)| [bytes(q), bytes(kc), bytes(vc)].concat(),
        );
        res.0.check_guards("qkv", &case);
        res.4.check_guards("k_cache", &case);
        res.5.check_guards("v_cache", &case);
        // twin
        let mut tq = qkv.clone();
        let (mut tk, mut tv) = (kc0.clone(), vc0.clone());
        let half = d / 2;
        let (mut cos, mut sin) = (vec![0f32; n * half], vec![0f32; n * half]);
        for (t, &(_, pos, _)) in toks.iter().enumerate() {
            rope::angles(pos, &inv_freq, &mut cos[t * half..(t + 1) * half], &mut sin[t * half..(t + 1) * half]);
        }
        let slots: Vec<usize> = toks.iter().map(|t| t.0).collect();
        qk_norm_rope_write_kv(&mut tq, shape, &qn, &kn, eps, &cos, &sin, &slots, &mut tk, &mut tv);
        let got_qkv = from_bf16_bits(res.0.as_slice());
        // q heads: normalised and rotated (abs: f32 noise on the rotation's cancellation, |q| <= ~sqrt(d)·1.5)
        let abs = 1e-5 * max_abs(&tq);
        for t in 0..n {
            let r = t * width..t * width + h * d;
            check_close(&format!("q of token {t}"), &case, &got_qkv[r.clone()], &tq[r], BF16_REL, abs);
            // the k and v parts of qkv are left as they were
            let r = t * width + h * d..(t + 1) * width;
            check_exact(
                &format!("k|v part of qkv, token {t}"),
                &case,
                &res.0.as_slice()[r.clone()],
                &to_bf16_bits(&qkv[r]),
            );
        }
        check_close("k_cache", &case, &from_bf16_bits(res.4.as_slice()), &tk, BF16_REL, abs);
        check_exact("v_cache", &case, res.5.as_slice(), &to_bf16_bits(&tv));
    }
}

// ------------------------------------------------------------------------------------------------------
// attention (prefill and decode)
// ------------------------------------------------------------------------------------------------------

#[derive(Debug)]
#[allow(dead_code)]
struct AttnCase {
    decode: bool,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    q_stride: usize,
    rows: Vec<Row>,
    n_slots: u32,
    misalign: usize,
    seed: u64,
}

fn attention_case(case: &AttnCase) {
    let (h, kvh, d) = (case.n_heads, case.n_kv_heads, case.head_dim);
    let mut rng = Rng::new(case.seed);
    let toks = token_layout(&case.rows);
    let n = toks.len();
    let kv_w = kvh * d;
    let slots = case.n_slots as usize;
    let q = round_bf16(&rng.vec(n * case.q_stride, 2.0));
    // slots outside every row's visible range hold NaN: reading one poisons the output
    let mut visible = vec![false; slots];
    for r in &case.rows {
        for s in r.slot_base..r.slot_base + r.past_len + r.q_len {
            visible[s as usize] = true;
        }
    }
    let mut kc = round_bf16(&rng.vec(slots * kv_w, 2.0));
    let mut vc = round_bf16(&rng.vec(slots * kv_w, 1.0));
    for (s, &vis) in visible.iter().enumerate() {
        if !vis {
            kc[s * kv_w..(s + 1) * kv_w].fill(f32::NAN);
            vc[s * kv_w..(s + 1) * kv_w].fill(f32::NAN);
        }
    }
    let max_q_len = case.rows.iter().map(|r| r.q_len).max().unwrap_or(0);
    let max_kv_len = case.rows.iter().map(|r| r.past_len + r.q_len).max().unwrap_or(0);
    let params = |qb: &mut Buf<u16>,
                  kb: &mut Buf<u16>,
                  vb: &mut Buf<u16>,
                  ob: &mut Buf<u16>,
                  rb: &mut Buf<Row>,
                  ws: &mut Buf<f32>| {
        AttnParams {
            q: qb.dp(),
            k_cache: kb.dp(),
            v_cache: vb.dp(),
            out: ob.dp(),
            rows: rb.dp(),
            workspace: ws.dp(),
            n_rows: case.rows.len() as u32,
            n_tokens: n as u32,
            n_heads: h as u32,
            n_kv_heads: kvh as u32,
            head_dim: d as u32,
            q_stride: case.q_stride as u32,
            max_q_len,
            max_kv_len,
            scale: 1.0 / (d as f32).sqrt(),
            _pad: 0,
        }
    };
    let ws_bytes = {
        let p = AttnParams {
            n_rows: case.rows.len() as u32,
            n_heads: h as u32,
            n_kv_heads: kvh as u32,
            head_dim: d as u32,
            q_stride: case.q_stride as u32,
            max_q_len,
            max_kv_len,
            ..Default::default()
        };
        if case.decode {
            AttnDecode(p).plan().unwrap().workspace_bytes
        } else {
            0
        }
    };
    let m = case.misalign;
    let res = run_checked(
        case,
        || {
            (
                Buf::<u16>::from_slice(&to_bf16_bits(&q), m),
                Buf::<u16>::from_slice(&to_bf16_bits(&kc), m),
                Buf::<u16>::from_slice(&to_bf16_bits(&vc), m),
                Buf::<u16>::poisoned(n * h * d, m),
                Buf::<Row>::from_slice(&case.rows, 0),
                Buf::<f32>::poisoned(ws_bytes as usize / 4, 0),
            )
        },
        |(qb, kb, vb, ob, rb, ws), opts| {
            let p = params(qb, kb, vb, ob, rb, ws);
            // SAFETY: q [n, q_stride], caches [n_slots, KVH, d], out [n, H, d], rows, workspace per the plan.
            unsafe {
                if case.decode {
                    emu::emulate(&AttnDecode(p), opts)
                } else {
                    emu::emulate(&AttnPrefill(p), opts)
                }
            }
        },
        |(_, _, _, ob, _, _)| bytes(ob),
    );
    res.3.check_guards("out", case);
    res.5.check_guards("workspace", case);
    // twin on the de-strided q
    let mut tq = vec![0f32; n * h * d];
    for t in 0..n {
        tq[t * h * d..(t + 1) * h * d].copy_from_slice(&q[t * case.q_stride..t * case.q_stride + h * d]);
    }
    let spans: Vec<AttnSpan> = toks.iter().map(|t| t.2).collect();
    let mut want = vec![0f32; n * h * d];
    attention(&tq, &kc, &vc, &spans, AttnShape { n_heads: h, n_kv_heads: kvh, head_dim: d }, &mut want);
    // abs: softmax weights agree to ~1e-6 relative (f32, exp vs exp2); the output mixes V rows of |v| <= 1
    check_close("attention out", case, &from_bf16_bits(res.3.as_slice()), &want, BF16_REL, 2e-5);
}

#[test]
fn attention_prefill_matches_cpu() {
    // (H, KVH, d): GQA ratios 1, 2, 4, 8, odd/small head dims (scalar paths), Qwen3's 128
    let shapes = [(1, 1, 8), (2, 1, 16), (4, 1, 64), (8, 1, 32), (4, 4, 6), (16, 2, 128), (6, 3, 40), (4, 2, 10)];
    for (i, (h, kvh, d)) in cases(&shapes, &[1, 4, 5]) {
        let mut rng = Rng::new(300 + i as u64);
        // uneven batch: length-1 rows, an empty row, a fresh prefill, a prefill on top of a cache, a long row
        let spec: Vec<(u32, u32)> = match i % 3 {
            0 => vec![(0, 1), (0, 37), (50, 5), (7, 0), (100, 1)],
            1 => vec![(0, 19), (3, 2)],
            _ => vec![(260, 40), (0, 1)],
        };
        let (rows, n_slots) = make_rows(&mut rng, &spec, 3);
        let stride = if i % 2 == 0 { (h + 2 * kvh) * d } else { h * d };
        attention_case(&AttnCase {
            decode: false,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            q_stride: stride,
            rows,
            n_slots,
            misalign: usize::from(i == 6),
            seed: 300 + i as u64,
        });
    }
}

#[test]
fn attention_decode_matches_cpu() {
    let shapes = [(1, 1, 8), (2, 1, 16), (4, 1, 64), (8, 1, 32), (4, 4, 6), (16, 2, 128), (6, 3, 40)];
    for (i, (h, kvh, d)) in cases(&shapes, &[3, 5]) {
        let mut rng = Rng::new(400 + i as u64);
        // past lengths: empty cache, inside one chunk, exactly a chunk, several chunks
        let spec: Vec<(u32, u32)> = match i % 2 {
            0 => vec![(0, 1), (17, 1), (255, 1), (600, 1)],
            _ => vec![(256, 1), (3, 1), (511, 1)],
        };
        let (rows, n_slots) = make_rows(&mut rng, &spec, 1);
        let stride = if i % 2 == 0 { (h + 2 * kvh) * d } else { h * d };
        attention_case(&AttnCase {
            decode: true,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            q_stride: stride,
            rows,
            n_slots,
            misalign: usize::from(i == 3),
            seed: 400 + i as u64,
        });
    }
}

// ------------------------------------------------------------------------------------------------------
// SwiGLU, embedding gather
// ------------------------------------------------------------------------------------------------------

#[test]
fn swiglu_matches_cpu() {
    let all = [(1, 1, 0), (3, 37, 0), (4, 64, 0), (4, 64, 1), (2, 3072, 0), (7, 200, 0)];
    for (i, (n, inter, misalign)) in cases(&all, &[1, 2]) {
        let case = format!("swiglu n={n} inter={inter} misalign={misalign} seed={}", 500 + i);
        let mut rng = Rng::new(500 + i as u64);
        let gu = round_bf16(&rng.vec(n * 2 * inter, 6.0));
        let res = run_checked(
            &case,
            || (Buf::<u16>::from_slice(&to_bf16_bits(&gu), misalign), Buf::<u16>::poisoned(n * inter, misalign)),
            |(g, o), opts| {
                let p = SwigluParams { gate_up: g.dp(), out: o.dp(), n: n as u32, inter: inter as u32 };
                // SAFETY: gate_up [n, 2·inter], out [n, inter].
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, o)| bytes(o),
        );
        res.1.check_guards("out", &case);
        let mut want = vec![0f32; n * inter];
        swiglu(&gu, inter, &mut want);
        check_close("swiglu", &case, &from_bf16_bits(res.1.as_slice()), &want, BF16_REL, 1e-6);
    }
}

/// Twin of latentmas_embed: row copies, zero rows for out-of-range ids.
fn embed_twin(ids: &[u32], out_rows: Option<&[u32]>, table: &[u16], dim: usize, vocab: usize, out: &mut [u16]) {
    for (i, &id) in ids.iter().enumerate() {
        let r = out_rows.map_or(i, |o| o[i] as usize);
        let dst = &mut out[r * dim..(r + 1) * dim];
        if (id as usize) < vocab {
            dst.copy_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
        } else {
            dst.fill(0);
        }
    }
}

#[test]
fn embed_matches_twin() {
    let all = [(50, 37, 0, false), (50, 64, 0, true), (9, 64, 1, true), (300, 1024, 0, false)];
    for (i, (vocab, dim, misalign, permute)) in cases(&all, &[0, 1]) {
        let mut rng = Rng::new(600 + i as u64);
        let n = 6;
        let mut ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        ids[2] = vocab as u32 + 5; // out of range: zero row
        let out_rows: Vec<u32> = if permute { vec![7, 0, 3, 5, 1, 6] } else { (0..n as u32).collect() };
        let n_out = 8;
        let case = format!("embed vocab={vocab} dim={dim} misalign={misalign} ids={ids:?} out_rows={out_rows:?}");
        let table = to_bf16_bits(&rng.vec(vocab * dim, 1.0));
        let res = run_checked(
            &case,
            || {
                (
                    Buf::<u32>::from_slice(&ids, 0),
                    Buf::<u32>::from_slice(&out_rows, 0),
                    Buf::<u16>::from_slice(&table, misalign),
                    Buf::<u16>::from_slice(&vec![0x1234u16; n_out * dim], misalign),
                )
            },
            |(ib, rb, tb, ob), opts| {
                let p = EmbedParams {
                    ids: ib.dp(),
                    out_rows: if permute { rb.dp() } else { 0 },
                    table: tb.dp(),
                    out: ob.dp(),
                    n: n as u32,
                    dim: dim as u32,
                    vocab: vocab as u32,
                    _pad: 0,
                };
                // SAFETY: ids/out_rows [n], table [vocab, dim], out [8, dim].
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, _, _, ob)| bytes(ob),
        );
        res.3.check_guards("out", &case);
        let mut want = vec![0x1234u16; n_out * dim];
        embed_twin(&ids, permute.then_some(&out_rows[..]), &table, dim, vocab, &mut want);
        check_exact("embed", &case, res.3.as_slice(), &want);
    }
}

// ------------------------------------------------------------------------------------------------------
// latent projection
// ------------------------------------------------------------------------------------------------------

/// Twin of latentmas_latent_project: a = h · W_a = matmul(h, W_aᵀ as [out, in]); e = a / max(‖a‖, 1e-6) · t.
fn latent_twin(h_rows: &[Vec<f32>], w_a_t: &[f32], dim: usize, target: f32) -> Vec<Vec<f32>> {
    let n = h_rows.len();
    let h: Vec<f32> = h_rows.concat();
    let mut a = vec![0f32; n * dim];
    matmul(&h, n, &WeightMatrix::f32(dim, dim, w_a_t.to_vec()), &mut a);
    a.chunks(dim)
        .map(|r| {
            let norm = r.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt() as f32;
            r.iter().map(|x| x / norm.max(1e-6) * target).collect()
        })
        .collect()
}

#[test]
fn latent_project_matches_twin() {
    let all = [(1, 8, 0), (3, 37, 0), (8, 64, 0), (2, 256, 0), (2, 64, 1), (1, 1, 0)];
    for (i, (rows, dim, misalign)) in cases(&all, &[1, 2]) {
        let mut rng = Rng::new(700 + i as u64);
        let n_h = rows + 2; // hidden states of more tokens than rows: in_rows picks each row's last one
        let h = round_bf16(&rng.vec(n_h * dim, 3.0));
        let w = round_bf16(&rng.vec(dim * dim, 1.0 / (dim as f32).sqrt()));
        let in_rows: Vec<u32> = (0..rows as u32).map(|r| (r + 2) % n_h as u32).collect();
        let out_rows: Vec<u32> = (0..rows as u32).rev().collect();
        let target = 0.75f32;
        let case = format!("latent rows={rows} dim={dim} misalign={misalign} in_rows={in_rows:?} out_rows={out_rows:?} target={target}");
        let ws_bytes =
            LatentParams { n_rows: rows as u32, dim: dim as u32, ..Default::default() }.plan().unwrap().workspace_bytes;
        let res = run_checked(
            &case,
            || {
                (
                    Buf::<u16>::from_slice(&to_bf16_bits(&h), misalign),
                    Buf::<u32>::from_slice(&in_rows, 0),
                    Buf::<u16>::from_slice(&to_bf16_bits(&w), misalign),
                    Buf::<u16>::poisoned(rows * dim, misalign),
                    Buf::<u32>::from_slice(&out_rows, 0),
                    Buf::<f32>::zeroed(ws_bytes as usize / 4),
                )
            },
            |(hb, ib, wb, ob, orb, ws), opts| {
                let p = LatentParams {
                    h: hb.dp(),
                    in_rows: ib.dp(),
                    w_a_t: wb.dp(),
                    out: ob.dp(),
                    out_rows: orb.dp(),
                    workspace: ws.dp(),
                    n_rows: rows as u32,
                    dim: dim as u32,
                    target_norm: target,
                    _pad: 0,
                };
                // SAFETY: h [n_h, dim], w [dim, dim], out [rows, dim], index arrays [rows], workspace per the plan.
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, _, _, ob, _, _)| bytes(ob),
        );
        res.3.check_guards("out", &case);
        res.5.check_guards("workspace", &case);
        assert_eq!(res.5.as_slice()[0].to_bits(), 0, "the block counter must be back at zero\n{case}");
        let h_rows: Vec<Vec<f32>> =
            in_rows.iter().map(|&r| h[r as usize * dim..(r as usize + 1) * dim].to_vec()).collect();
        let want = latent_twin(&h_rows, &w, dim, target);
        let got = from_bf16_bits(res.3.as_slice());
        for (r, wr) in want.iter().enumerate() {
            let o = out_rows[r] as usize;
            // abs: f32 dot products of length dim in a different order, relative to the row's scale
            check_close(&format!("latent row {r}"), &case, &got[o * dim..(o + 1) * dim], wr, BF16_REL, 1e-5 * target);
            let norm = got[o * dim..(o + 1) * dim].iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - target).abs() < 0.01 * target, "row {r}: norm {norm} vs target {target}\n{case}");
        }
    }
    // h = 0: a = 0, the 1e-6 floor keeps e = 0 (no NaN)
    let dim = 16;
    let mut ws = Buf::<f32>::zeroed(
        LatentParams { n_rows: 1, dim, ..Default::default() }.plan().unwrap().workspace_bytes as usize / 4,
    );
    let mut hb = Buf::<u16>::zeroed(dim as usize);
    let mut wb = Buf::<u16>::from_slice(&to_bf16_bits(&vec![1.0; (dim * dim) as usize]), 0);
    let mut ob = Buf::<u16>::poisoned(dim as usize, 0);
    let p = LatentParams {
        h: hb.dp(),
        w_a_t: wb.dp(),
        out: ob.dp(),
        workspace: ws.dp(),
        n_rows: 1,
        dim,
        target_norm: 1.0,
        ..Default::default()
    };
    // SAFETY: buffers sized per the params.
    unsafe { emu::emulate(&p, Options::default()) }.unwrap();
    assert!(ob.as_slice().iter().all(|&b| b == 0), "zero hidden state gives a zero embedding");
}

// ------------------------------------------------------------------------------------------------------
// KV splice
// ------------------------------------------------------------------------------------------------------

fn kv_config(layers: usize, kv_heads: usize, head_dim: usize) -> Qwen3Config {
    Qwen3Config {
        vocab_size: 10,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: layers,
        num_attention_heads: kv_heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        max_position_embeddings: 128,
    }
}

#[test]
fn kv_splice_matches_kv_buffer() {
    // (layers, kv_heads, head_dim, misalign): kv_width 16 and 128 (16-byte columns), 6 (2-byte columns)
    let all = [(2, 2, 8, 0), (3, 1, 6, 0), (1, 8, 16, 0), (2, 2, 8, 1)];
    for (i, (layers, kvh, d, misalign)) in cases(&all, &[0, 1]) {
        let slots = 64usize;
        let cfg = kv_config(layers, kvh, d);
        let kv_w = kvh * d;
        let ops = vec![
            SpliceOp { src: 2, dst: 5, len: 10 },   // overlapping, forward
            SpliceOp { src: 10, dst: 3, len: 7 },   // overlapping, backward
            SpliceOp { src: 0, dst: 40, len: 4 },   // disjoint
            SpliceOp { src: 20, dst: 21, len: 30 }, // long shift by one slot
            SpliceOp { src: 5, dst: 5, len: 3 },    // no-op
            SpliceOp { src: 50, dst: 60, len: 9 },  // out of range: skipped by the kernel, refused by KvBuffer
        ];
        let case =
            format!("splice layers={layers} kv_heads={kvh} head_dim={d} misalign={misalign} slots={slots} ops={ops:?}");
        let mut rng = Rng::new(800 + i as u64);
        let data = round_bf16(&rng.vec(layers * 2 * slots * kv_w, 1.0));
        let res = run_checked(
            &case,
            || (Buf::<u16>::from_slice(&to_bf16_bits(&data), misalign), Buf::<SpliceOp>::from_slice(&ops, 0)),
            |(kb, ob), opts| {
                let p = SpliceParams {
                    kv: kb.dp(),
                    ops: ob.dp(),
                    n_ops: ops.len() as u32,
                    n_layers: layers as u32,
                    n_slots: slots as u32,
                    kv_width: kv_w as u32,
                };
                // SAFETY: kv is [layers, 2, slots, kv_width], ops [n_ops].
                unsafe { emu::emulate(&p, opts) }
            },
            |(kb, _)| bytes(kb),
        );
        res.0.check_guards("kv", &case);
        let mut twin = KvBuffer::new(&cfg, KvBudget::Tokens(slots)).unwrap();
        let plane = slots * kv_w;
        for l in 0..layers {
            let (k, v) = twin.layer_mut(l);
            k.copy_from_slice(&data[(2 * l) * plane..(2 * l + 1) * plane]);
            v.copy_from_slice(&data[(2 * l + 1) * plane..(2 * l + 2) * plane]);
        }
        for op in &ops {
            let r = twin.splice(op.src as usize, op.dst as usize, op.len as usize);
            assert_eq!(
                r.is_ok(),
                op.src as usize + op.len as usize <= slots && op.dst as usize + op.len as usize <= slots
            );
        }
        let mut want = Vec::new();
        for l in 0..layers {
            let (k, v) = twin.layer(l);
            want.extend_from_slice(k);
            want.extend_from_slice(v);
        }
        check_exact("kv after splice", &case, res.0.as_slice(), &to_bf16_bits(&want));
    }
}

// ------------------------------------------------------------------------------------------------------
// argmax and sampling
// ------------------------------------------------------------------------------------------------------

fn argmax_twin(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn argmax_matches_twin() {
    let all = [(1, 1, 1), (3, 37, 40), (2, 1000, 1000), (2, 3001, 3010)];
    for (i, (rows, vocab, stride)) in cases(&all, &[1, 2]) {
        let mut rng = Rng::new(900 + i as u64);
        let mut logits = rng.vec(rows * stride, 10.0);
        for r in 0..rows {
            let row = &mut logits[r * stride..(r + 1) * stride];
            if vocab > 4 {
                let m = max_abs(row) + 1.0;
                row[vocab - 1] = m; // a tie: the lower id wins
                row[vocab / 3] = m;
                row[0] = f32::NEG_INFINITY;
            }
            for v in &mut row[vocab..] {
                *v = 1e30; // padding ids past vocab_limit must be ignored
            }
        }
        let case = format!("argmax rows={rows} vocab={vocab} stride={stride} seed={}", 900 + i);
        let res = run_checked(
            &case,
            || (Buf::<f32>::from_slice(&logits, 0), Buf::<u32>::poisoned(rows, 0)),
            |(lb, ob), opts| {
                let p = ArgmaxParams {
                    logits: lb.dp(),
                    out: ob.dp(),
                    n_rows: rows as u32,
                    stride: stride as u32,
                    vocab_limit: vocab as u32,
                    _pad: 0,
                };
                // SAFETY: logits [rows, stride], out [rows].
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, ob)| bytes(ob),
        );
        let want: Vec<u32> = (0..rows).map(|r| argmax_twin(&logits[r * stride..r * stride + vocab])).collect();
        check_exact("argmax", &case, res.1.as_slice(), &want);
    }
}

/// Twin of latentmas_sample in f64: temperature → top-k (ties with the k-th kept) → top-p (a token is kept
/// iff the mass of strictly more probable tokens is < p) → inverse CDF in id order at u. Returns the id and
/// the set of ids a correct f32 implementation may return (the id itself, plus a neighbour when u·Z or p·Z
/// lies within 1e-4 relative of a boundary).
fn sample_twin(x: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f32) -> (u32, Vec<u32>) {
    let v = x.len();
    if temperature <= 0.0 {
        let a = argmax_twin(x);
        return (a, vec![a]);
    }
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let mut sorted: Vec<f32> = x.to_vec();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let kmin = if top_k > 0 && top_k < v { sorted[top_k - 1] } else { f32::NEG_INFINITY };
    let w: Vec<f64> =
        x.iter().map(|&l| if l >= kmin { ((l as f64 - m) / temperature as f64).exp() } else { 0.0 }).collect();
    let z: f64 = w.iter().sum();
    let mut ambiguous = Vec::new();
    let mut keep = vec![true; v];
    if top_p < 1.0 {
        for i in 0..v {
            // mass strictly more probable than token i
            let above: f64 = w.iter().filter(|&&o| o > w[i]).sum();
            keep[i] = w[i] > 0.0 && above < top_p as f64 * z;
            if w[i] > 0.0 && (above - top_p as f64 * z).abs() < 1e-4 * z {
                ambiguous.push(i as u32);
            }
        }
    }
    let kept: Vec<f64> = (0..v).map(|i| if keep[i] { w[i] } else { 0.0 }).collect();
    let z2: f64 = kept.iter().sum();
    let target = u as f64 * z2;
    let mut cum = 0.0;
    let mut pick = None;
    for (i, &k) in kept.iter().enumerate() {
        if k == 0.0 {
            continue;
        }
        let before = cum;
        cum += k;
        if (before - target).abs() < 1e-4 * z2 || (cum - target).abs() < 1e-4 * z2 {
            ambiguous.push(i as u32);
        }
        if pick.is_none() && cum > target {
            pick = Some(i as u32);
        }
    }
    let last = kept.iter().rposition(|&k| k > 0.0).unwrap() as u32;
    let id = pick.unwrap_or(last);
    let mut ok = vec![id];
    if !ambiguous.is_empty() {
        // near a boundary: the neighbouring kept ids are acceptable too
        for a in ambiguous {
            for d in [-1i64, 0, 1] {
                let j = a as i64 + d;
                if j >= 0 && (j as usize) < v && w[j as usize] > 0.0 {
                    ok.push(j as u32);
                }
            }
        }
    }
    (id, ok)
}

#[derive(Debug)]
#[allow(dead_code)]
struct SampleCase {
    vocab: usize,
    stride: usize,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    tied: bool,
    uniform: Vec<f32>,
    seed: u64,
}

#[test]
fn sample_matches_twin() {
    // (vocab, temperature, top_k, top_p, tied logits)
    let configs = [
        (1, 0.6, 20, 0.95, false),
        (5, 1.0, 0, 1.0, false),
        (100, 0.6, 20, 0.95, false), // the reference's settings
        (100, 0.0, 20, 0.95, false), // greedy
        (1000, 2.0, 0, 0.5, false),
        (1000, 1.0, 1, 1.0, false),  // top-1 = greedy
        (300, 0.8, 50, 0.9, true),   // ties at the top-k and top-p boundaries
        (3001, 0.6, 0, 0.01, false), // top-p keeps only the head
        (257, 1.0, 256, 1.0, true),
    ];
    let rows = if tsan_build() { 1 } else { 3 };
    for (i, (vocab, temperature, top_k, top_p, tied)) in cases(&configs, &[2, 6]) {
        let mut rng = Rng::new(1000 + i as u64);
        let stride = vocab + 3;
        let logits: Vec<f32> =
            (0..rows * stride).map(|_| if tied { (rng.below(12) as f32) * 0.5 } else { rng.sym(6.0) }).collect();
        let uniform: Vec<f32> = (0..rows).map(|_| rng.unit()).collect();
        let case = SampleCase {
            vocab,
            stride,
            temperature,
            top_k,
            top_p,
            tied,
            uniform: uniform.clone(),
            seed: 1000 + i as u64,
        };
        let res = run_checked(
            &case,
            || (Buf::<f32>::from_slice(&logits, 0), Buf::<f32>::from_slice(&uniform, 0), Buf::<u32>::poisoned(rows, 0)),
            |(lb, ub, ob), opts| {
                let p = SampleParams {
                    logits: lb.dp(),
                    uniform: ub.dp(),
                    out: ob.dp(),
                    n_rows: rows as u32,
                    stride: stride as u32,
                    vocab_limit: vocab as u32,
                    top_k,
                    temperature,
                    top_p,
                };
                // SAFETY: logits [rows, stride], uniform/out [rows].
                unsafe { emu::emulate(&p, opts) }
            },
            |(_, _, ob)| bytes(ob),
        );
        for r in 0..rows {
            let x = &logits[r * stride..r * stride + vocab];
            let (want, ok) = sample_twin(x, temperature, top_k as usize, top_p, uniform[r]);
            let got = res.2.as_slice()[r];
            assert!(ok.contains(&got), "row {r}: sampled {got}, twin {want} (acceptable {ok:?})\ncase: {case:#?}");
        }
    }
}

#[test]
fn sample_follows_the_distribution() {
    // many u values over one row: the kernel's choice is the twin's inverse CDF at each u
    let vocab = 40;
    let mut rng = Rng::new(77);
    let row: Vec<f32> = (0..vocab).map(|_| rng.sym(3.0)).collect();
    let rows = if tsan_build() { 2 } else { 16 };
    let logits: Vec<f32> = (0..rows).flat_map(|_| row.clone()).collect();
    let uniform: Vec<f32> = (0..rows).map(|i| (i as f32 + 0.5) / rows as f32).collect();
    let (temperature, top_k, top_p) = (0.7, 10, 0.8);
    let mut lb = Buf::<f32>::from_slice(&logits, 0);
    let mut ub = Buf::<f32>::from_slice(&uniform, 0);
    let mut ob = Buf::<u32>::poisoned(rows, 0);
    let p = SampleParams {
        logits: lb.dp(),
        uniform: ub.dp(),
        out: ob.dp(),
        n_rows: rows as u32,
        stride: vocab as u32,
        vocab_limit: vocab as u32,
        top_k,
        temperature,
        top_p,
    };
    // SAFETY: logits [rows, vocab], uniform/out [rows].
    unsafe { emu::emulate(&p, Options::default()) }.unwrap();
    for (&u, &got) in uniform.iter().zip(ob.as_slice()) {
        let (want, ok) = sample_twin(&row, temperature, top_k as usize, top_p, u);
        assert!(ok.contains(&got), "u={u}: got {got} want {want}");
    }
}
