//! The `emu` device: the cuda backend's exact op sequence and memory layout, run on the CPU.
//!
//! - Weights: bf16 copies of every matrix and norm vector (an f32 checkpoint is rounded to nearest even,
//!   as the cuda backend will upload it); RoPE `inv_freq` in f32.
//! - Activations: bf16 buffers ([`Acts`]`<Vec<bf16>>`); logits f32.
//! - KV: ONE bf16 buffer `[layer][K|V][slot][kv_head][head_dim]`, as many slots as the engine's [`KvBuffer`]
//!   (which keeps doing the row bookkeeping).
//! - Every non-GEMM op is launched through its kernel params struct ([`crate::kernels`]) with host addresses
//!   as [`DevPtr`]s and executed by [`emu::emulate`] (the real `kernels/*.cu` compiled for the host).
//! - GEMMs (the projections and lm_head) are a CPU GEMM with bf16 inputs, f32 accumulation and bf16 output
//!   (f32 for logits) in place of cuBLAS.
//! - Attention: the decode kernels (split-KV + merge) when every row feeds one token, else prefill; the same
//!   choice the cuda backend makes.
//! - The latent step's projection runs the `latent_project` kernel ([`LatentParams`]).
//!
//! Operations: [`EmuModel::new`], [`EmuModel::forward`], [`EmuModel::set_alignment`],
//! [`EmuModel::latent_project`].
//!
//! [`KvBuffer`]: crate::kv::KvBuffer

use half::bf16;
use rayon::prelude::*;

use crate::backend::{Acts, CallLayout, ForwardOps, Linear, Norm};
use crate::error::{Error, Result};
use crate::kernels::{
    emu, AddRmsNormParams, AttnDecode, AttnParams, AttnPrefill, DevPtr, EmbedParams, KernelOp, LatentParams,
    QkNormRopeParams, RmsNormParams, Row, SwigluParams, LATENT_MAX_ROWS,
};
use crate::latent::Alignment;
use crate::model::config::Qwen3Config;
use crate::model::matrix::{WeightData, WeightMatrix};
use crate::model::qwen3::{commit_call, forward_ops, plan_call, ForwardOut, Input, Qwen3, RowStep};

/// A bf16 weight matrix `[rows, cols]` (row-major, PyTorch layout).
struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<bf16>,
}

impl Mat {
    fn from(m: &WeightMatrix) -> Self {
        let data = match &m.data {
            WeightData::Bf16(v) => v.clone(),
            WeightData::F32(v) => v.iter().map(|&x| bf16::from_f32(x)).collect(),
        };
        Mat { rows: m.rows, cols: m.cols, data }
    }
}

fn vec16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

struct Layer {
    input_norm: Vec<bf16>,
    qkv: Mat,
    q_norm: Vec<bf16>,
    k_norm: Vec<bf16>,
    o_proj: Mat,
    post_norm: Vec<bf16>,
    gate_up: Mat,
    down: Mat,
}

/// The latent projection's device state.
struct Latent {
    /// `W_aᵀ` `[D_out, D_in]` bf16 (the identity when realign is off).
    w_a_t: Vec<bf16>,
    target_norm: f32,
    /// The kernel's workspace, zeroed once (its block counter returns to zero after every launch).
    workspace: Vec<f32>,
    out: Vec<bf16>,
}

/// The "device": weights, the KV buffer and per-call scratch, all in host memory.
pub struct EmuDevice {
    cfg: Qwen3Config,
    embed: Mat,
    lm_head: Option<Mat>,
    layers: Vec<Layer>,
    final_norm: Vec<bf16>,
    inv_freq: Vec<f32>,
    /// `[layer][K|V][slot][kv_width]` bf16.
    kv: Vec<bf16>,
    n_slots: usize,
    /// The call's row table (uploaded by `begin`).
    rows: Vec<Row>,
    /// Embedding gather: token ids and destination rows.
    ids: Vec<u32>,
    out_rows: Vec<u32>,
    /// Decode attention workspace.
    attn_ws: Vec<f32>,
    latent: Option<Latent>,
    opts: emu::Options,
}

/// The model on the emu device.
pub struct EmuModel {
    pub dev: EmuDevice,
    acts: Acts<Vec<bf16>>,
    layout: CallLayout,
}

fn ptr<T>(v: &[T]) -> DevPtr {
    v.as_ptr() as DevPtr
}

fn ptr_mut<T>(v: &mut [T]) -> DevPtr {
    v.as_mut_ptr() as DevPtr
}

/// Sizes an activation buffer to exactly `len` elements (a device buffer's logical extent).
fn fit(v: &mut Vec<bf16>, len: usize) {
    v.resize(len, bf16::ZERO);
}

fn launch<P: KernelOp>(p: &P, opts: emu::Options) -> Result<()> {
    // SAFETY: every caller builds `p` from host buffers sized for the op's full extent (checked by the
    // asserts next to each launch) and holds `&mut` to every buffer written, so nothing else accesses them.
    unsafe { emu::emulate(p, opts) }.map_err(Error::from)
}

/// `out[t, j] = Σ_k x[t, k] · w[j, k]` in f32 from bf16 inputs (the cuBLAS GemmEx stand-in).
fn gemm_f32(x: &[bf16], n: usize, w: &Mat) -> Vec<f32> {
    let k = w.cols;
    assert!(x.len() >= n * k, "gemm: x has {} elements, need {n}×{k}", x.len());
    let xf: Vec<f32> = x[..n * k].iter().map(|v| v.to_f32()).collect();
    let mut t = vec![0f32; w.rows * n];
    t.par_chunks_mut(n).zip(w.data.par_chunks_exact(k)).for_each(|(o, wr)| {
        let wf: Vec<f32> = wr.iter().map(|v| v.to_f32()).collect();
        for (ti, ov) in o.iter_mut().enumerate() {
            *ov = xf[ti * k..(ti + 1) * k].iter().zip(&wf).map(|(a, b)| a * b).sum();
        }
    });
    // transpose [rows, n] → [n, rows]
    let mut out = vec![0f32; n * w.rows];
    for j in 0..w.rows {
        for ti in 0..n {
            out[ti * w.rows + j] = t[j * n + ti];
        }
    }
    out
}

impl EmuDevice {
    fn norm(&self, w: Norm) -> &[bf16] {
        match w {
            Norm::Input(l) => &self.layers[l].input_norm,
            Norm::Post(l) => &self.layers[l].post_norm,
            Norm::Final => &self.final_norm,
        }
    }
    fn matrix(&self, w: Linear) -> &Mat {
        match w {
            Linear::Qkv(l) => &self.layers[l].qkv,
            Linear::O(l) => &self.layers[l].o_proj,
            Linear::GateUp(l) => &self.layers[l].gate_up,
            Linear::Down(l) => &self.layers[l].down,
        }
    }
    fn kv_width(&self) -> usize {
        self.cfg.num_key_value_heads * self.cfg.head_dim
    }
    /// Element offsets of layer `l`'s K and V planes.
    fn planes(&self, l: usize) -> (usize, usize) {
        let plane = self.n_slots * self.kv_width();
        (2 * l * plane, (2 * l + 1) * plane)
    }
    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    /// Layer `layer`'s K and V planes as f32 `[slots, KVH, d]` (tests).
    pub fn kv_layer_f32(&self, layer: usize) -> (Vec<f32>, Vec<f32>) {
        let (k, v) = self.planes(layer);
        let plane = self.n_slots * self.kv_width();
        let f = |o: usize| self.kv[o..o + plane].iter().map(|x| x.to_f32()).collect();
        (f(k), f(v))
    }

    /// Bytes of the bf16 KV buffer.
    pub fn kv_bytes(&self) -> u64 {
        (self.kv.len() * 2) as u64
    }
}

impl ForwardOps for EmuDevice {
    type Act = Vec<bf16>;

    fn begin(&mut self, layout: &CallLayout) -> Result<()> {
        // cuda: one H2D copy of the row table (a decode step can keep it in a graph-owned buffer)
        self.rows.clear();
        self.rows.extend_from_slice(&layout.rows);
        Ok(())
    }

    fn embed(&mut self, steps: &[RowStep<'_>], layout: &CallLayout, x: &mut Vec<bf16>) -> Result<()> {
        let d = self.cfg.hidden_size;
        fit(x, layout.n_tokens * d);
        self.ids.clear();
        self.out_rows.clear();
        for (input, row) in steps.iter().map(|s| &s.input).zip(&layout.rows) {
            let t = row.q_start as usize;
            match *input {
                Input::Tokens(ids) => {
                    self.ids.extend_from_slice(ids);
                    self.out_rows.extend((0..ids.len()).map(|i| (t + i) as u32));
                }
                // cuda: an H2D copy of the (already bf16-valued) vectors
                Input::Embeddings(e) => {
                    for (dst, &v) in x[t * d..t * d + e.len()].iter_mut().zip(e) {
                        *dst = bf16::from_f32(v);
                    }
                }
            }
        }
        if !self.ids.is_empty() {
            let p = EmbedParams {
                ids: ptr(&self.ids),
                out_rows: ptr(&self.out_rows),
                table: ptr(&self.embed.data),
                out: ptr_mut(x),
                n: self.ids.len() as u32,
                dim: d as u32,
                vocab: self.embed.rows as u32,
                _pad: 0,
            };
            launch(&p, self.opts)?;
        }
        Ok(())
    }

    fn rms_norm(&mut self, x: &Vec<bf16>, w: Norm, rows: usize, out: &mut Vec<bf16>) -> Result<()> {
        let d = self.cfg.hidden_size;
        assert!(x.len() >= rows * d);
        fit(out, rows * d);
        let p = RmsNormParams {
            x: ptr(x),
            weight: ptr(self.norm(w)),
            out: ptr_mut(out),
            rows: rows as u32,
            dim: d as u32,
            eps: self.eps(),
            _pad: 0,
        };
        launch(&p, self.opts)
    }

    fn add_rms_norm(
        &mut self,
        residual: &mut Vec<bf16>,
        delta: &Vec<bf16>,
        w: Norm,
        rows: usize,
        out: &mut Vec<bf16>,
    ) -> Result<()> {
        let d = self.cfg.hidden_size;
        assert!(residual.len() >= rows * d && delta.len() >= rows * d);
        fit(out, rows * d);
        let p = AddRmsNormParams {
            residual: ptr_mut(residual),
            delta: ptr(delta),
            weight: ptr(self.norm(w)),
            out: ptr_mut(out),
            rows: rows as u32,
            dim: d as u32,
            eps: self.eps(),
            _pad: 0,
        };
        launch(&p, self.opts)
    }

    fn linear(&mut self, x: &Vec<bf16>, rows: usize, w: Linear, out: &mut Vec<bf16>) -> Result<()> {
        let m = self.matrix(w);
        let y = gemm_f32(x, rows, m);
        out.clear();
        out.extend(y.iter().map(|&v| bf16::from_f32(v)));
        Ok(())
    }

    fn qk_norm_rope_kv(&mut self, layer: usize, qkv: &mut Vec<bf16>, layout: &CallLayout) -> Result<()> {
        let cfg = &self.cfg;
        assert!(qkv.len() >= layout.n_tokens * cfg.qkv_width());
        let (ko, vo) = self.planes(layer);
        let k_cache = ptr_mut(&mut self.kv[ko..]);
        let v_cache = ptr_mut(&mut self.kv[vo..]);
        let lw = &self.layers[layer];
        let p = QkNormRopeParams {
            qkv: ptr_mut(qkv),
            q_norm: ptr(&lw.q_norm),
            k_norm: ptr(&lw.k_norm),
            inv_freq: ptr(&self.inv_freq),
            k_cache,
            v_cache,
            rows: ptr(&self.rows),
            n_rows: self.rows.len() as u32,
            n_tokens: layout.n_tokens as u32,
            n_heads: cfg.num_attention_heads as u32,
            n_kv_heads: cfg.num_key_value_heads as u32,
            head_dim: cfg.head_dim as u32,
            n_slots: self.n_slots as u32,
            eps: cfg.rms_norm_eps as f32,
            _pad: 0,
        };
        launch(&p, self.opts)
    }

    fn attention(&mut self, layer: usize, qkv: &Vec<bf16>, layout: &CallLayout, out: &mut Vec<bf16>) -> Result<()> {
        let cfg = &self.cfg;
        let n = layout.n_tokens;
        assert!(qkv.len() >= n * cfg.qkv_width());
        fit(out, n * cfg.q_width());
        let (ko, vo) = self.planes(layer);
        let mut p = AttnParams {
            q: ptr(qkv),
            k_cache: ptr(&self.kv[ko..]),
            v_cache: ptr(&self.kv[vo..]),
            out: ptr_mut(out),
            rows: ptr(&self.rows),
            workspace: 0,
            n_rows: self.rows.len() as u32,
            n_tokens: n as u32,
            n_heads: cfg.num_attention_heads as u32,
            n_kv_heads: cfg.num_key_value_heads as u32,
            head_dim: cfg.head_dim as u32,
            q_stride: cfg.qkv_width() as u32,
            max_q_len: layout.max_q_len as u32,
            max_kv_len: layout.max_kv_len as u32,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            _pad: 0,
        };
        if layout.is_decode() {
            let need = AttnDecode(p).plan()?.workspace_bytes as usize;
            self.attn_ws.resize(need.div_ceil(4).max(1), 0.0);
            p.workspace = ptr_mut(&mut self.attn_ws);
            launch(&AttnDecode(p), self.opts)
        } else {
            launch(&AttnPrefill(p), self.opts)
        }
    }

    fn swiglu(&mut self, gate_up: &Vec<bf16>, rows: usize, out: &mut Vec<bf16>) -> Result<()> {
        let inter = self.cfg.intermediate_size;
        assert!(gate_up.len() >= rows * 2 * inter);
        fit(out, rows * inter);
        let p = SwigluParams { gate_up: ptr(gate_up), out: ptr_mut(out), n: rows as u32, inter: inter as u32 };
        launch(&p, self.opts)
    }

    fn gather_rows(&mut self, x: &Vec<bf16>, rows: &[usize], out: &mut Vec<bf16>) -> Result<()> {
        // the embedding-gather kernel with `x` as the table
        let d = self.cfg.hidden_size;
        fit(out, rows.len() * d);
        self.ids.clear();
        self.ids.extend(rows.iter().map(|&r| r as u32));
        let p = EmbedParams {
            ids: ptr(&self.ids),
            out_rows: 0,
            table: ptr(x),
            out: ptr_mut(out),
            n: rows.len() as u32,
            dim: d as u32,
            vocab: (x.len() / d) as u32,
            _pad: 0,
        };
        launch(&p, self.opts)
    }

    fn logits(&mut self, hidden: &Vec<bf16>, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        *out = gemm_f32(hidden, rows, head);
        Ok(())
    }

    fn read(&mut self, a: &Vec<bf16>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.extend(a[..len].iter().map(|v| v.to_f32()));
        Ok(())
    }
}

impl EmuModel {
    /// Uploads `model`'s weights as bf16 and allocates a zeroed bf16 KV buffer of `n_slots` slots.
    pub fn new(model: &Qwen3, n_slots: usize) -> Result<Self> {
        let cfg = model.config.clone();
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .map(|l| Layer {
                input_norm: vec16(&l.input_norm),
                qkv: Mat::from(&l.qkv),
                q_norm: vec16(&l.q_norm),
                k_norm: vec16(&l.k_norm),
                o_proj: Mat::from(&l.o_proj),
                post_norm: vec16(&l.post_norm),
                gate_up: Mat::from(&l.gate_up),
                down: Mat::from(&l.down),
            })
            .collect();
        let kv_len = cfg.num_hidden_layers * 2 * n_slots * cfg.kv_width();
        let mut kv = Vec::new();
        kv.try_reserve_exact(kv_len)
            .map_err(|_| Error::KvCapacity(format!("cannot allocate {} bytes of bf16 KV", kv_len * 2)))?;
        kv.resize(kv_len, bf16::ZERO);
        let dev = EmuDevice {
            embed: Mat::from(&w.embed),
            lm_head: w.lm_head.as_ref().map(Mat::from),
            layers,
            final_norm: vec16(&w.final_norm),
            inv_freq: model.inv_freq().to_vec(),
            kv,
            n_slots,
            rows: Vec::new(),
            ids: Vec::new(),
            out_rows: Vec::new(),
            attn_ws: Vec::new(),
            latent: None,
            opts: emu::Options::default(),
            cfg,
        };
        Ok(EmuModel { dev, acts: Acts::default(), layout: CallLayout::default() })
    }

    /// The layout of the last call.
    pub fn layout(&self) -> &CallLayout {
        &self.layout
    }

    /// One forward call, with [`Qwen3::forward`]'s contract: hidden states (bf16 values as f32) land in
    /// `out.hidden`, f32 logits in `out.logits`; the rows advance only on success.
    pub fn forward(&mut self, steps: &mut [RowStep<'_>], logits: bool, out: ForwardOut<'_>) -> Result<()> {
        let cfg = self.dev.cfg.clone();
        plan_call(&cfg, self.dev.n_slots, steps, &mut self.layout)?;
        forward_ops(&cfg, &mut self.dev, &mut self.acts, &self.layout, steps, logits, out)?;
        commit_call(steps, cfg.hidden_size);
        Ok(())
    }

    /// Uploads the alignment's `W_aᵀ` (bf16; the identity when realign is off) and target norm.
    pub fn set_alignment(&mut self, align: &Alignment) -> Result<()> {
        let d = self.dev.cfg.hidden_size;
        let w_a_t: Vec<bf16> = match align.w_a() {
            // w_a is [D_in, D_out] row-major; the kernel wants [D_out, D_in]
            Some(wa) => (0..d * d).map(|idx| bf16::from_f32(wa[(idx % d) * d + idx / d])).collect(),
            None => (0..d * d).map(|idx| if idx % d == idx / d { bf16::ONE } else { bf16::ZERO }).collect(),
        };
        let probe = LatentParams {
            n_rows: LATENT_MAX_ROWS,
            dim: d as u32,
            target_norm: align.target_norm,
            ..Default::default()
        };
        // sized for the largest launch (LATENT_MAX_ROWS rows)
        let ws_bytes = probe.plan()?.workspace_bytes as usize;
        self.dev.latent = Some(Latent {
            w_a_t,
            target_norm: align.target_norm,
            workspace: vec![0.0; ws_bytes.div_ceil(4).max(1)],
            out: Vec::new(),
        });
        Ok(())
    }

    /// The latent step's input embedding of each of the last call's `rows` selected hidden states,
    /// `normalize(h · W_a) · target_norm` in bf16 (returned as f32 values), by the `latent_project` kernel.
    pub fn latent_project(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let d = self.dev.cfg.hidden_size;
        let opts = self.dev.opts;
        let lat = self
            .dev
            .latent
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("emu latent step before set_alignment".into()))?;
        let h = &self.acts.hidden;
        if h.len() < rows * d {
            return Err(Error::InvalidArgument(format!(
                "latent step over {rows} rows but {} hidden states",
                h.len() / d
            )));
        }
        fit(&mut lat.out, rows * d);
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(LATENT_MAX_ROWS as usize);
            let p = LatentParams {
                h: ptr(&h[r0 * d..]),
                in_rows: 0,
                w_a_t: ptr(&lat.w_a_t),
                out: ptr_mut(&mut lat.out[r0 * d..]),
                out_rows: 0,
                workspace: ptr_mut(&mut lat.workspace),
                n_rows: n as u32,
                dim: d as u32,
                target_norm: lat.target_norm,
                _pad: 0,
            };
            launch(&p, opts)?;
            r0 += n;
        }
        out.clear();
        out.extend(lat.out.iter().map(|v| v.to_f32()));
        Ok(())
    }
}
