//! The engine: one model, its tokenizer, ONE KV buffer shared by every agent of every question, and the
//! reused forward workspace. It offers the three phases every method is built from, each batched over rows:
//! [`Engine::prefill`], [`Engine::latent_steps`] and [`Engine::decode`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::cpu::matmul::Precision;
use crate::backend::cuda::{self, nvtx, CudaModel};
#[cfg(feature = "emu")]
use crate::backend::emu::{self, EmuModel};
use crate::error::{Error, Result};
use crate::kv::{KvBudget, KvBuffer, KvRow};
use crate::latent::Alignment;
use crate::model::qwen3::{ForwardOut, Input, Qwen3, RowStep, Select, Workspace};
use crate::sample::{Sampler, SamplingParams};
use crate::startup::{load_model_and_tokenizer, Startup};
use crate::tokenizer::Tokenizer;

pub struct Engine {
    pub model: Qwen3,
    pub tokenizer: Tokenizer,
    /// The KV buffer: row bookkeeping always, and the K/V themselves on the cpu device (on emu it is
    /// [`KvBuffer::bookkeeping`] with 2-byte elements and the device keeps the bf16 buffer of the same slots).
    pub kv: KvBuffer,
    pub ws: Workspace,
    pub model_dir: PathBuf,
    pub device: Device,
    /// Arithmetic of [`Engine::prefill`]'s projections for bf16 weights on the cpu device. Default
    /// [`Precision::Bf16Activations`]: activations rounded to bf16, f32 accumulation, on the CPU's best
    /// kernel family ([`crate::backend::cpu::bf16_gemm`]: AMX ≈ 10× the exact path, AVX512-BF16, AVX-512, AVX2 + FMA,
    /// portable; what transformers and llama.cpp do with bf16 weights). Set
    /// [`Precision::Exact`] for f32 activations everywhere. f32 weights are always exact; latent steps are
    /// always exact.
    pub prefill_precision: Precision,
    /// Arithmetic of [`Engine::decode`]'s steps for bf16 weights. Default [`Precision::Exact`];
    /// [`Precision::Bf16Activations`] trades the rounding of the activations for throughput at large
    /// batches (on AMX a batch-16 step becomes memory bound). Every row of every batch size takes the same
    /// path, so a row decodes the same tokens alone and in a batch either way.
    pub decode_precision: Precision,
    /// On a kernel-running device (cuda, emu), [`Engine::decode`] picks each next token on the device (the
    /// `argmax` / `sample` kernels, the same rule and random stream as the host sampler) and downloads only
    /// the ids instead of every row's logits. Default true; false samples on the host (tests compare both).
    pub device_sampling: bool,
    /// Positions a row may reach: the config's `max_position_embeddings` unless overridden
    /// ([`Engine::set_max_context`]). Every forward call is refused past it.
    pub max_context: usize,
    /// Set from any thread to stop the work under way: [`Engine::decode`] checks it before each token
    /// and [`Engine::latent_steps`] before each step, and return [`Error::Interrupted`] (so a run stops
    /// within one forward pass). Whoever sets it clears it before the next call ([`Engine::abort_flag`]).
    abort: Arc<AtomicBool>,
    /// Told when [`Engine::prefill`], [`Engine::latent_steps`] or [`Engine::decode`] starts, with the size of
    /// its work (prompt tokens of every row, latent steps, the new-token limit): progress for an embedder
    /// (the C API's `lm_run` progress callback). None by default.
    pub on_phase: Option<Box<dyn FnMut(Phase, usize) + Send>>,
}

/// A phase of the work [`Engine::on_phase`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Latent,
    Decode,
}

/// Which device an engine runs its forward passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The f32 reference backend.
    #[default]
    Cpu,
    /// The cuda backend's bf16 op sequence with the kernels run by the host emulator (slow; for tests).
    Emu,
    /// A CUDA GPU (device 0): our kernels, cuBLAS, graphs for decode and latent steps.
    Cuda,
}

/// The device state an engine holds.
pub enum Device {
    Cpu,
    #[cfg(feature = "emu")]
    Emu(Box<EmuModel>),
    Cuda(Box<CudaModel>),
}

/// Runs `$body` with `$m` bound to the device model of a kernel-running device (emu or cuda; both are a
/// `backend::gpu::GpuModel`), or evaluates `$cpu` on the cpu device.
macro_rules! on_device {
    ($dev:expr, cpu => $cpu:expr, $m:ident => $body:expr) => {
        match $dev {
            Device::Cpu => $cpu,
            #[cfg(feature = "emu")]
            Device::Emu($m) => $body,
            Device::Cuda($m) => $body,
        }
    };
}

impl Device {
    pub fn kind(&self) -> DeviceKind {
        match self {
            Device::Cpu => DeviceKind::Cpu,
            #[cfg(feature = "emu")]
            Device::Emu(_) => DeviceKind::Emu,
            Device::Cuda(_) => DeviceKind::Cuda,
        }
    }

    /// Turns CUDA-graph capture of decode and latent steps on or off (kernel-running devices; default on).
    /// Off launches every op separately, which Nsight Compute needs for per-kernel attribution.
    pub fn set_graphs(&mut self, on: bool) {
        on_device!(self, cpu => {}, m => m.set_graphs(on))
    }

    /// Graph captures and replays so far (zero on the cpu device).
    pub fn graph_stats(&self) -> crate::backend::gpu::GraphStats {
        on_device!(self, cpu => Default::default(), m => m.graph_stats())
    }
}

/// Per-row result of [`Engine::decode`].
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Generated ids, the stop token included when one was produced (as transformers returns them).
    pub ids: Vec<u32>,
    /// Tokens fed back into the cache (every generated id but the last).
    pub cached: usize,
}

/// Builds the global thread pool with `threads` workers (default: one per core), the calling thread being
/// one of them (first call wins; later calls are ignored by rayon). Call it from the thread that will run
/// the engine: its parallel loops then start on its own work queue instead of being injected from
/// outside the pool, which costs a wake-up and, every 64 injections, an allocation.
pub fn set_threads(threads: Option<usize>) {
    let mut builder = rayon::ThreadPoolBuilder::new().use_current_thread();
    if let Some(n) = threads {
        builder = builder.num_threads(n.max(1));
    }
    let _ = builder.build_global();
}

/// [`set_threads`] for a library whose calls arrive on threads the pool does not own (Python, C): every
/// worker is a thread of the pool's own. A pool that counted the caller in would wait for it in each
/// parallel region that runs on every worker (`rayon::broadcast`), and a caller blocked waiting for the
/// run's result would hang it.
pub fn set_threads_owned(threads: Option<usize>) {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n.max(1));
    }
    let _ = builder.build_global();
}

impl Engine {
    /// Loads the model and tokenizer of `model_dir` and allocates the KV buffer.
    pub fn open(model_dir: &Path, budget: KvBudget) -> Result<Self> {
        Self::open_on(model_dir, budget, DeviceKind::Cpu)
    }

    /// [`Engine::open`] on the given device. The tokenizer and the weights load side by side
    /// ([`load_model_and_tokenizer`]).
    pub fn open_on(model_dir: &Path, budget: KvBudget, device: DeviceKind) -> Result<Self> {
        let (model, tokenizer) = load_model_and_tokenizer(model_dir, &mut Startup::default())?;
        Self::from_parts(model_dir, model, tokenizer, budget, device)
    }

    /// An engine from a loaded model and tokenizer: checks they fit together and allocates the KV buffer
    /// (and, on a kernel-running device, the device model).
    pub fn from_parts(
        model_dir: &Path,
        model: Qwen3,
        tokenizer: Tokenizer,
        budget: KvBudget,
        device: DeviceKind,
    ) -> Result<Self> {
        if tokenizer.len() > model.config.vocab_size {
            return Err(Error::Config(format!(
                "the tokenizer has {} ids but the embedding only {} rows",
                tokenizer.len(),
                model.config.vocab_size
            )));
        }
        let (kv, mut device) = match device {
            DeviceKind::Cpu => (KvBuffer::new(&model.config, budget)?, Device::Cpu),
            // bf16 KV on the device: the engine's buffer only does the row bookkeeping
            #[cfg(feature = "emu")]
            DeviceKind::Emu => {
                let kv = KvBuffer::bookkeeping(&model.config, budget, 2)?;
                let m = emu::new_emu_model(&model, kv.slots())?;
                (kv, Device::Emu(Box::new(m)))
            }
            #[cfg(not(feature = "emu"))]
            DeviceKind::Emu => {
                return Err(Error::Device(
                    "the emu device needs the host kernel emulator, which this build leaves out (the `emu` \
                     feature of the latentmas crate; the CLI has it)"
                        .into(),
                ))
            }
            DeviceKind::Cuda => {
                let kv = KvBuffer::bookkeeping(&model.config, budget, 2)?;
                let m = cuda::new_cuda_model(&model, kv.slots())?;
                (kv, Device::Cuda(Box::new(m)))
            }
        };
        let model_context = model.config.max_position_embeddings;
        if std::env::var("LATENTMAS_CUDA_GRAPHS").is_ok_and(|v| v == "0") {
            // profiling: every op launched on its own (Nsight Compute per-kernel attribution)
            device.set_graphs(false);
        }
        Ok(Engine {
            model,
            tokenizer,
            kv,
            ws: Workspace::default(),
            model_dir: model_dir.to_path_buf(),
            device,
            prefill_precision: Precision::Bf16Activations,
            decode_precision: Precision::Exact,
            device_sampling: true,
            max_context: model_context,
            abort: Arc::new(AtomicBool::new(false)),
            on_phase: None,
        })
    }

    /// The flag that stops this engine's decode and latent loops (see the field's doc): a caller that
    /// embeds the engine (Python's Ctrl-C, a C abort callback) keeps a clone and stores `true` into it.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        self.abort.clone()
    }

    fn phase(&mut self, phase: Phase, work: usize) {
        if let Some(f) = self.on_phase.as_mut() {
            f(phase, work);
        }
    }

    fn check_abort(&self, what: impl FnOnce() -> String) -> Result<()> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(Error::Interrupted(what()));
        }
        Ok(())
    }

    /// Overrides the context length taken from the config (for a model whose config understates it).
    pub fn set_max_context(&mut self, positions: usize) -> Result<()> {
        if positions == 0 {
            return Err(Error::InvalidArgument("--max-context must be at least 1".into()));
        }
        self.max_context = positions;
        Ok(())
    }

    /// One forward call on the engine's device; outputs land in `ws.hidden` and `ws.logits`.
    pub fn forward(&mut self, steps: &mut [RowStep<'_>], logits: bool) -> Result<()> {
        self.forward_with(steps, logits, Precision::Exact)
    }

    /// [`Engine::forward`] with the cpu device's `precision` for every bf16 matmul (the emu and cuda
    /// devices are bf16 anyway).
    pub fn forward_with(&mut self, steps: &mut [RowStep<'_>], logits: bool, precision: Precision) -> Result<()> {
        self.forward_split(steps, logits, precision, precision)
    }

    /// [`Engine::forward_with`] with separate precisions for the layers' projections and the lm_head.
    pub fn forward_split(
        &mut self,
        steps: &mut [RowStep<'_>],
        logits: bool,
        precision: Precision,
        head_precision: Precision,
    ) -> Result<()> {
        let d = self.model.config.hidden_size;
        for s in steps.iter() {
            let n = match s.input {
                Input::Tokens(t) => t.len(),
                Input::Embeddings(e) => e.len() / d.max(1),
            };
            let end = s.row.pos_base.saturating_add(s.row.len).saturating_add(n);
            if end > self.max_context {
                return Err(Error::InvalidArgument(format!(
                    "a row would reach position {end} but the model's context length is {} \
                     (max_position_embeddings; --max-context overrides it)",
                    self.max_context
                )));
            }
        }
        let ws = &mut self.ws;
        on_device!(&mut self.device,
            cpu => self.model.forward_split(&mut self.kv, ws, steps, logits, precision, head_precision),
            m => {
                // the bookkeeping buffer checks the rows lie inside it (the device buffer has as many slots)
                let out =
                    ForwardOut { hidden: &mut ws.hidden, logits: &mut ws.logits, capture: ws.capture_layers.as_mut() };
                m.forward(steps, logits, out)
            }
        )
    }

    /// Ids that may be sampled: the tokenizer's, never the embedding's padding rows.
    pub fn vocab_limit(&self) -> usize {
        self.tokenizer.len().min(self.model.config.vocab_size)
    }

    pub fn hidden_size(&self) -> usize {
        self.model.config.hidden_size
    }

    /// Renders a `[system, user]` chat prompt (plus `suffix`, e.g. `<think>`) and tokenizes it.
    pub fn chat_ids(&self, system: Option<&str>, user: &str, suffix: &str) -> Result<Vec<u32>> {
        let mut text = self.tokenizer.render_chat(system, user, None)?;
        text.push_str(suffix);
        self.tokenizer.encode(&text)
    }

    /// Appends each row's prompt to its cache in one forward call. Afterwards `ws.hidden` holds each row's
    /// last final-norm hidden state and, if `logits`, `ws.logits` its next-token logits.
    pub fn prefill(&mut self, rows: &mut [KvRow], prompts: &[&[u32]], logits: bool) -> Result<()> {
        self.phase(Phase::Prefill, prompts.iter().map(|p| p.len()).sum());
        let mut steps: Vec<RowStep> = rows
            .iter_mut()
            .zip(prompts)
            .map(|(row, p)| RowStep { row, input: Input::Tokens(p), select: Select::Last })
            .collect();
        let _range = nvtx::range("prefill");
        // The projections at the prefill precision; the lm_head (one row per prompt) exact.
        let precision = self.prefill_precision;
        self.forward_split(&mut steps, logits, precision, Precision::Exact)?;
        self.check_finite(logits, || "prefill".into())
    }

    /// Refuses a NaN or Inf in the last call's hidden states (and logits, when asked for and downloaded),
    /// naming the phase: a non-finite value would otherwise decode as garbage text with a success status.
    /// One pass over `[rows, D]` (and `[rows, vocab]`), small next to the matmuls that made them.
    fn check_finite(&self, logits: bool, phase: impl FnOnce() -> String) -> Result<()> {
        let d = self.model.config.hidden_size;
        let bad_row = |v: &[f32], width: usize| v.chunks(width.max(1)).position(|r| r.iter().any(|x| !x.is_finite()));
        let (what, row) = match bad_row(&self.ws.hidden, d) {
            Some(r) => ("hidden state", r),
            None if logits => match bad_row(&self.ws.logits, self.model.config.vocab_size) {
                Some(r) => ("logits", r),
                None => return Ok(()),
            },
            None => return Ok(()),
        };
        Err(Error::NonFinite(format!(
            "{} produced NaN or Inf in the {what} of row {}; the checkpoint's weights (or its config's values) \
             overflow",
            phase(),
            row + 1
        )))
    }

    /// Runs `m` latent steps on every row, starting from the hidden states in `ws.hidden` (one per row, as
    /// the last prefill or step left them). `observe(row, e)` sees every fed vector (for traces).
    pub fn latent_steps(
        &mut self,
        rows: &mut [KvRow],
        m: usize,
        align: &Alignment,
        mut observe: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let d = self.hidden_size();
        for r in rows.iter() {
            r.check_append(m)?;
        }
        self.phase(Phase::Latent, m);
        let _range = nvtx::range("latent");
        let mut inputs = vec![0f32; rows.len() * d];
        if m > 0 {
            on_device!(&mut self.device, cpu => {}, dev => dev.set_alignment(align)?);
        }
        for step in 0..m {
            self.check_abort(|| format!("before latent step {} of {m}", step + 1))?;
            let ws = &self.ws;
            on_device!(&mut self.device,
                cpu => {
                    for (i, e) in inputs.chunks_exact_mut(d).enumerate() {
                        align.project(ws.hidden_row(i, d), e);
                    }
                },
                // the latent_project kernel on the device's bf16 hidden states
                dev => dev.latent_project(rows.len(), &mut inputs)?
            );
            for (i, e) in inputs.chunks_exact(d).enumerate() {
                observe(i, e);
            }
            let mut steps: Vec<RowStep> = rows
                .iter_mut()
                .zip(inputs.chunks_exact(d))
                .map(|(row, e)| RowStep { row, input: Input::Embeddings(e), select: Select::Last })
                .collect();
            self.forward(&mut steps, false)?;
            self.check_finite(false, || format!("latent step {} of {m}", step + 1))?;
        }
        Ok(())
    }

    /// Decodes every row from the logits the last prefill left in `ws.logits`, feeding each sampled token
    /// back, until a stop token or `max_new` tokens. Rows decode together; a finished row drops out.
    /// `on_token(tokenizer, row, id)` sees each token as it is chosen (streaming).
    pub fn decode(
        &mut self,
        rows: &mut [KvRow],
        params: &SamplingParams,
        max_new: usize,
        mut on_token: impl FnMut(&Tokenizer, usize, u32),
    ) -> Result<Vec<Decoded>> {
        let vocab = self.model.config.vocab_size;
        let limit = self.vocab_limit();
        let stops = self.tokenizer.stop_ids();
        // One sampler per row, seeded alike: a row samples the same tokens in a batch as alone.
        let mut samplers: Vec<Sampler> = rows.iter().map(|_| Sampler::new(*params)).collect();
        // Every buffer of the loop is made here: a decode step allocates nothing (tests/no_alloc.rs).
        let mut out: Vec<Decoded> =
            rows.iter().map(|_| Decoded { ids: Vec::with_capacity(max_new.min(4096)), cached: 0 }).collect();
        if max_new == 0 {
            return Ok(out);
        }
        self.phase(Phase::Decode, max_new);
        let _range = nvtx::range("decode");
        // `active[j]` = row index whose logits are at position j of ws.logits.
        let mut active: Vec<usize> = (0..rows.len()).collect();
        let mut still: Vec<usize> = Vec::with_capacity(rows.len());
        let mut next: Vec<u32> = Vec::with_capacity(rows.len());
        let mut spare_steps: Vec<RowStep<'static>> = Vec::with_capacity(rows.len());
        // Picks made on the device for the rows of `active` (when `picked_on_device`), and their uniforms.
        let mut device_ids: Vec<u32> = Vec::with_capacity(rows.len());
        let mut uniforms: Vec<f32> = Vec::with_capacity(rows.len());
        let mut picked_on_device = false;
        loop {
            next.clear();
            still.clear();
            for (j, &r) in active.iter().enumerate() {
                let id = if picked_on_device {
                    device_ids[j]
                } else {
                    samplers[r].sample(self.ws.logits_row(j, vocab), limit)
                };
                out[r].ids.push(id);
                on_token(&self.tokenizer, r, id);
                if !stops.contains(&id) && out[r].ids.len() < max_new {
                    still.push(r);
                    next.push(id);
                }
            }
            std::mem::swap(&mut active, &mut still);
            if active.is_empty() {
                return Ok(out);
            }
            self.check_abort(|| format!("decode, after {} generated tokens", out[active[0]].ids.len()))?;
            for &r in &active {
                rows[r].check_append(1)?;
            }
            let mut steps = recycle(spare_steps);
            let mut remaining: &mut [KvRow] = rows;
            let mut consumed = 0;
            for (&r, id) in active.iter().zip(&next) {
                let (_, tail) = remaining.split_at_mut(r - consumed);
                let (row, rest) = tail.split_first_mut().expect("active row index in range");
                steps.push(RowStep { row, input: Input::Tokens(std::slice::from_ref(id)), select: Select::Last });
                remaining = rest;
                consumed = r + 1;
            }
            let precision = self.decode_precision;
            picked_on_device = false;
            if self.device_sampling {
                let ws = &mut self.ws;
                let sink = ForwardOut { hidden: &mut ws.hidden, logits: &mut ws.logits, capture: None };
                picked_on_device = on_device!(&mut self.device, cpu => false, m => {
                    m.forward_for_sampling(&mut steps, sink)?;
                    uniforms.clear();
                    uniforms.extend(active.iter().filter_map(|&r| samplers[r].draw_uniform()));
                    m.sample(active.len(), params, &uniforms, limit, &mut device_ids)?;
                    true
                });
            }
            if !picked_on_device {
                self.forward_with(&mut steps, true, precision)?;
            }
            // on the device path only the hidden states came back (the logits stayed there)
            let generated = out[active[0]].ids.len();
            self.check_finite(!picked_on_device, || format!("decode step {generated}"))?;
            spare_steps = recycle(steps);
            for &r in &active {
                out[r].cached += 1;
            }
        }
    }
}

/// Empties a vector of row steps and hands its allocation over to steps of another lifetime (the
/// decode loop rebuilds its steps every token from fresh borrows; in-place collection keeps the buffer).
fn recycle<'b>(mut v: Vec<RowStep<'_>>) -> Vec<RowStep<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector was just cleared")).collect()
}

/// Seconds since `t`.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
