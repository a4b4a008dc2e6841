//! [`GpuModel`]: the Qwen3 forward on a kernel-running [`Device`] (see the module docs of `backend::gpu`).
//!
//! Memory, all on the device:
//! - weights: bf16 copies of every matrix and norm vector (an f32 checkpoint is rounded to nearest even);
//!   RoPE `inv_freq` in f32;
//! - ONE bf16 KV buffer `[layer][K|V][slot][kv_head][head_dim]` of `n_slots` slots (the engine's `KvBuffer`
//!   only keeps the row bookkeeping);
//! - grow-only activations ([`Acts`] of [`Grow`]), per-call input tables (row table, token ids and their
//!   destination rows, input-embedding vectors, selected positions), the decode attention workspace, f32
//!   logits, and the latent projection's `W_aᵀ`.
//!
//! A forward call: [`ForwardOps::begin`] uploads every per-call input (the only host → device copies), then
//! [`forward_ops`] queues kernels and GEMMs without a host sync, then the selected hidden states and logits
//! are downloaded. Calls where every row feeds one token (decode and latent steps) are captured as a graph
//! the second time their shape is seen and replayed from then on (`graphs.rs`).

use half::bf16;

use super::graphs::{GraphCache, GraphStats};
use super::{DevBuf, Device, Gemm, Grow};
use crate::backend::{Acts, CallLayout, ForwardOps, Linear, Norm};
use crate::error::{Error, Result};
use crate::kernels::{
    AddRmsNormParams, ArgmaxParams, AttnDecode, AttnParams, AttnPrefill, DevPtr, EmbedParams, KernelOp, LatentParams,
    QkNormRopeParams, RmsNormParams, SampleParams, SwigluParams, LATENT_MAX_ROWS,
};
use crate::latent::Alignment;
use crate::model::config::Qwen3Config;
use crate::model::matrix::{WeightData, WeightMatrix};
use crate::model::qwen3::{commit_call, forward_ops, plan_call, read_outputs, ForwardOut, Input, Qwen3, RowStep};
use crate::sample::SamplingParams;

/// A bf16 weight matrix `[rows, cols]` on the device (row-major, PyTorch layout).
struct Mat<B> {
    buf: DevBuf<B>,
    rows: usize,
    cols: usize,
}

fn bf16_vec(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn upload_new<D: Device, T: bytemuck::Pod>(dev: &mut D, data: &[T]) -> Result<DevBuf<D::Buf>> {
    let buf = DevBuf::alloc(dev, std::mem::size_of_val(data))?;
    buf.upload(dev, 0, data)?;
    Ok(buf)
}

fn upload_mat<D: Device>(dev: &mut D, m: &WeightMatrix) -> Result<Mat<D::Buf>> {
    let buf = match &m.data {
        WeightData::Bf16(v) => upload_new(dev, v)?,
        WeightData::F32(v) => upload_new(dev, &bf16_vec(v))?,
    };
    Ok(Mat { buf, rows: m.rows, cols: m.cols })
}

struct Layer<B> {
    input_norm: DevBuf<B>,
    qkv: Mat<B>,
    q_norm: DevBuf<B>,
    k_norm: DevBuf<B>,
    o_proj: Mat<B>,
    post_norm: DevBuf<B>,
    gate_up: Mat<B>,
    down: Mat<B>,
}

/// The latent projection's device state.
struct Latent<B> {
    /// `W_aᵀ` `[D_out, D_in]` bf16 (the identity when realign is off).
    w_a_t: DevBuf<B>,
    target_norm: f32,
    /// The kernel's workspace, zeroed once (its block counter returns to zero after every launch).
    workspace: DevBuf<B>,
    out: Grow<B>,
}

/// Host copies of one call's input tables (kept to reuse their allocations).
#[derive(Default)]
struct HostTables {
    ids: Vec<u32>,
    out_rows: Vec<u32>,
    selected: Vec<u32>,
    vectors: Vec<bf16>,
    read: Vec<bf16>,
}

/// The device and everything on it; implements [`ForwardOps`].
pub struct GpuOps<D: Device> {
    pub dev: D,
    pub(super) cfg: Qwen3Config,
    embed: Mat<D::Buf>,
    lm_head: Option<Mat<D::Buf>>,
    layers: Vec<Layer<D::Buf>>,
    final_norm: DevBuf<D::Buf>,
    inv_freq: DevBuf<D::Buf>,
    /// `[layer][K|V][slot][kv_width]` bf16.
    kv: DevBuf<D::Buf>,
    n_slots: usize,
    /// The call's row table, token ids + destination rows, selected positions, and input vectors
    /// (`[n_tokens, D]` bf16, only the rows fed by vectors are meaningful); uploaded by `begin`.
    rows: Grow<D::Buf>,
    ids: Grow<D::Buf>,
    out_rows: Grow<D::Buf>,
    selected: Grow<D::Buf>,
    vectors: Grow<D::Buf>,
    host: HostTables,
    /// Decode attention workspace.
    attn_ws: Grow<D::Buf>,
    /// f32 logits `[selected, vocab]`.
    logits: Grow<D::Buf>,
    /// Device-side sampling: one uniform number in and one token id out per row.
    uniforms: Grow<D::Buf>,
    picked: Grow<D::Buf>,
    latent: Option<Latent<D::Buf>>,
    /// Bumped whenever a buffer that a captured graph may reference moves (graphs older than this are
    /// stale).
    pub(super) moved: u64,
    /// While true, the forward only sizes its buffers: launches, GEMMs and device copies are skipped
    /// (graph capture runs such a pass first, so that nothing grows inside the capture).
    pub(super) sizing: bool,
    /// Why a buffer could not grow while a graph was being captured (the capture is then abandoned).
    pub(super) capture_refused: Option<String>,
}

/// Takes a `Grow` out of `self` for the duration of `f` (so `f` can borrow `self` mutably).
macro_rules! with_table {
    ($self:ident . $field:ident, |$g:ident| $body:expr) => {{
        let mut $g = std::mem::take(&mut $self.$field);
        let r = $body;
        $self.$field = $g;
        r
    }};
}

impl<D: Device> GpuOps<D> {
    fn norm(&self, w: Norm) -> DevPtr {
        match w {
            Norm::Input(l) => self.layers[l].input_norm.addr(),
            Norm::Post(l) => self.layers[l].post_norm.addr(),
            Norm::Final => self.final_norm.addr(),
        }
    }
    fn matrix(&self, w: Linear) -> &Mat<D::Buf> {
        match w {
            Linear::Qkv(l) => &self.layers[l].qkv,
            Linear::O(l) => &self.layers[l].o_proj,
            Linear::GateUp(l) => &self.layers[l].gate_up,
            Linear::Down(l) => &self.layers[l].down,
        }
    }
    fn head(&self) -> &Mat<D::Buf> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
    /// Layer `l`'s K and V plane addresses.
    fn planes(&self, l: usize) -> (DevPtr, DevPtr) {
        let plane = (self.n_slots * self.cfg.kv_width() * 2) as DevPtr;
        let base = self.kv.addr();
        (base + 2 * l as DevPtr * plane, base + (2 * l + 1) as DevPtr * plane)
    }
    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }
    /// Sizes `g` for `len` elements of `elem` bytes, noting a move (or, while capturing, why it could not
    /// grow).
    fn fit(&mut self, g: &mut Grow<D::Buf>, len: usize, elem: usize) -> Result<DevPtr> {
        match g.fit(&mut self.dev, len, elem) {
            Ok(true) => self.moved += 1,
            Ok(false) => {}
            Err(e) => {
                if self.dev.capturing() && self.capture_refused.is_none() {
                    self.capture_refused = Some(e.to_string());
                }
                return Err(e);
            }
        }
        g.addr()
    }
    fn launch<P: KernelOp + Send + 'static>(&mut self, p: &P) -> Result<()> {
        if self.sizing {
            return Ok(());
        }
        // SAFETY: every caller fills `p` with addresses of this model's live buffers, each sized (by `fit`
        // or at allocation) for the op's full extent at these params; buffers are only freed by a later
        // `fit`, which never runs while queued work could still use the old buffer on the single stream.
        unsafe { self.dev.launch(p) }
    }
    /// # Safety
    /// As [`Device::gemm`].
    unsafe fn gemm(&mut self, g: &Gemm) -> Result<()> {
        if self.sizing {
            return Ok(());
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.dev.gemm(g) }
    }
    /// # Safety
    /// As [`Device::copy`].
    unsafe fn copy(&mut self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        if self.sizing {
            return Ok(());
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.dev.copy(dst, src, bytes) }
    }

    /// [`GpuModel::sample`].
    fn pick(
        &mut self,
        rows: usize,
        params: &SamplingParams,
        uniforms: &[f32],
        limit: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let vocab = self.head().rows;
        if self.logits.len < rows * vocab {
            return Err(Error::InvalidArgument(format!(
                "device sampling of {rows} rows, but the last call left {} rows of logits",
                self.logits.len / vocab
            )));
        }
        let logits = self.logits.addr()?;
        let picked = with_table!(self.picked, |g| self.fit(&mut g, rows, 4))?;
        let (n_rows, stride, vocab_limit) = (rows as u32, vocab as u32, limit.min(vocab) as u32);
        if params.greedy {
            let p = ArgmaxParams { logits, out: picked, n_rows, stride, vocab_limit, _pad: 0 };
            self.launch(&p)?;
        } else {
            if uniforms.len() != rows {
                return Err(Error::InvalidArgument(format!("{} uniform numbers for {rows} rows", uniforms.len())));
            }
            with_table!(self.uniforms, |g| self.upload_table(&mut g, uniforms))?;
            let p = SampleParams {
                logits,
                uniform: self.uniforms.addr()?,
                out: picked,
                n_rows,
                stride,
                vocab_limit,
                top_k: params.top_k.min(u32::MAX as usize) as u32,
                temperature: params.temperature,
                top_p: params.top_p,
            };
            self.launch(&p)?;
        }
        out.resize(rows, 0);
        self.picked.get()?.download(&mut self.dev, 0, out)
    }

    /// Uploads `data` into the grow-only table `g` (sized to `data`), noting a move.
    fn upload_table<T: bytemuck::Pod>(&mut self, g: &mut Grow<D::Buf>, data: &[T]) -> Result<()> {
        self.fit(g, data.len(), std::mem::size_of::<T>())?;
        if !data.is_empty() {
            g.get()?.upload(&mut self.dev, 0, data)?;
        }
        Ok(())
    }
}

impl<D: Device> ForwardOps for GpuOps<D> {
    type Act = Grow<D::Buf>;

    fn begin(&mut self, steps: &[RowStep<'_>], layout: &CallLayout) -> Result<()> {
        let d = self.cfg.hidden_size;
        let mut host = std::mem::take(&mut self.host);
        host.ids.clear();
        host.out_rows.clear();
        host.vectors.clear();
        host.selected.clear();
        host.selected.extend(layout.selected.iter().map(|&t| t as u32));
        for (input, row) in steps.iter().map(|s| &s.input).zip(&layout.rows) {
            let t = row.q_start as usize;
            match *input {
                Input::Tokens(ids) => {
                    host.ids.extend_from_slice(ids);
                    host.out_rows.extend((0..ids.len()).map(|i| (t + i) as u32));
                }
                Input::Embeddings(e) => {
                    host.vectors.resize(layout.n_tokens * d, bf16::ZERO);
                    for (dst, &v) in host.vectors[t * d..t * d + e.len()].iter_mut().zip(e) {
                        *dst = bf16::from_f32(v);
                    }
                }
            }
        }
        let r = (|| {
            with_table!(self.rows, |g| self.upload_table(&mut g, &layout.rows))?;
            with_table!(self.ids, |g| self.upload_table(&mut g, &host.ids))?;
            with_table!(self.out_rows, |g| self.upload_table(&mut g, &host.out_rows))?;
            with_table!(self.selected, |g| self.upload_table(&mut g, &host.selected))?;
            with_table!(self.vectors, |g| self.upload_table(&mut g, &host.vectors))
        })();
        self.host = host;
        r
    }

    fn embed(&mut self, _steps: &[RowStep<'_>], layout: &CallLayout, x: &mut Self::Act) -> Result<()> {
        let d = self.cfg.hidden_size;
        let out = self.fit(x, layout.n_tokens * d, 2)?;
        if self.vectors.len > 0 {
            // the vector rows (and zeros elsewhere; the id rows are written next)
            let src = self.vectors.addr()?;
            // SAFETY: both buffers hold n_tokens × D bf16 (sized above and by `begin`).
            unsafe { self.copy(out, src, layout.n_tokens * d * 2)? };
        }
        if self.ids.len > 0 {
            let p = EmbedParams {
                ids: self.ids.addr()?,
                out_rows: self.out_rows.addr()?,
                table: self.embed.buf.addr(),
                out,
                n: self.ids.len as u32,
                dim: d as u32,
                vocab: self.embed.rows as u32,
                _pad: 0,
            };
            self.launch(&p)?;
        }
        Ok(())
    }

    fn rms_norm(&mut self, x: &Self::Act, w: Norm, rows: usize, out: &mut Self::Act) -> Result<()> {
        let d = self.cfg.hidden_size;
        check_len(x, rows * d, "rms_norm input")?;
        let out = self.fit(out, rows * d, 2)?;
        let p = RmsNormParams {
            x: x.addr()?,
            weight: self.norm(w),
            out,
            rows: rows as u32,
            dim: d as u32,
            eps: self.eps(),
            _pad: 0,
        };
        self.launch(&p)
    }

    fn add_rms_norm(
        &mut self,
        residual: &mut Self::Act,
        delta: &Self::Act,
        w: Norm,
        rows: usize,
        out: &mut Self::Act,
    ) -> Result<()> {
        let d = self.cfg.hidden_size;
        check_len(residual, rows * d, "residual")?;
        check_len(delta, rows * d, "residual delta")?;
        let out = self.fit(out, rows * d, 2)?;
        let p = AddRmsNormParams {
            residual: residual.addr()?,
            delta: delta.addr()?,
            weight: self.norm(w),
            out,
            rows: rows as u32,
            dim: d as u32,
            eps: self.eps(),
            _pad: 0,
        };
        self.launch(&p)
    }

    fn linear(&mut self, x: &Self::Act, rows: usize, w: Linear, out: &mut Self::Act) -> Result<()> {
        let (m_rows, m_cols, m_addr) = {
            let m = self.matrix(w);
            (m.rows, m.cols, m.buf.addr())
        };
        check_len(x, rows * m_cols, "linear input")?;
        let out = self.fit(out, rows * m_rows, 2)?;
        let g = Gemm { x: x.addr()?, w: m_addr, out, n: rows, rows: m_rows, cols: m_cols, out_f32: false };
        // SAFETY: x holds rows × cols, the matrix rows × cols, out was sized rows × m_rows above.
        unsafe { self.gemm(&g) }
    }

    fn qk_norm_rope_kv(&mut self, layer: usize, qkv: &mut Self::Act, layout: &CallLayout) -> Result<()> {
        let cfg = &self.cfg;
        check_len(qkv, layout.n_tokens * cfg.qkv_width(), "qkv")?;
        let (k_cache, v_cache) = self.planes(layer);
        let lw = &self.layers[layer];
        let p = QkNormRopeParams {
            qkv: qkv.addr()?,
            q_norm: lw.q_norm.addr(),
            k_norm: lw.k_norm.addr(),
            inv_freq: self.inv_freq.addr(),
            k_cache,
            v_cache,
            rows: self.rows.addr()?,
            n_rows: layout.rows.len() as u32,
            n_tokens: layout.n_tokens as u32,
            n_heads: cfg.num_attention_heads as u32,
            n_kv_heads: cfg.num_key_value_heads as u32,
            head_dim: cfg.head_dim as u32,
            n_slots: self.n_slots as u32,
            eps: cfg.rms_norm_eps as f32,
            _pad: 0,
        };
        self.launch(&p)
    }

    fn attention(&mut self, layer: usize, qkv: &Self::Act, layout: &CallLayout, out: &mut Self::Act) -> Result<()> {
        let n = layout.n_tokens;
        check_len(qkv, n * self.cfg.qkv_width(), "qkv")?;
        let out = self.fit(out, n * self.cfg.q_width(), 2)?;
        let (k_cache, v_cache) = self.planes(layer);
        let cfg = &self.cfg;
        let mut p = AttnParams {
            q: qkv.addr()?,
            k_cache,
            v_cache,
            out,
            rows: self.rows.addr()?,
            workspace: 0,
            n_rows: layout.rows.len() as u32,
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
            p.workspace = with_table!(self.attn_ws, |g| self.fit(&mut g, need, 1))?;
            self.launch(&AttnDecode(p))
        } else {
            self.launch(&AttnPrefill(p))
        }
    }

    fn swiglu(&mut self, gate_up: &Self::Act, rows: usize, out: &mut Self::Act) -> Result<()> {
        let inter = self.cfg.intermediate_size;
        check_len(gate_up, rows * 2 * inter, "gate|up")?;
        let out = self.fit(out, rows * inter, 2)?;
        let p = SwigluParams { gate_up: gate_up.addr()?, out, n: rows as u32, inter: inter as u32 };
        self.launch(&p)
    }

    fn gather_selected(&mut self, x: &Self::Act, layout: &CallLayout, out: &mut Self::Act) -> Result<()> {
        // the embedding-gather kernel with `x` as the table and the uploaded selected positions as ids
        let d = self.cfg.hidden_size;
        let sel = layout.selected.len();
        check_len(x, layout.n_tokens * d, "final hidden states")?;
        let out = self.fit(out, sel * d, 2)?;
        let p = EmbedParams {
            ids: self.selected.addr()?,
            out_rows: 0,
            table: x.addr()?,
            out,
            n: sel as u32,
            dim: d as u32,
            vocab: layout.n_tokens as u32,
            _pad: 0,
        };
        self.launch(&p)
    }

    fn logits(&mut self, hidden: &Self::Act, rows: usize) -> Result<()> {
        let (vocab, cols, w) = {
            let h = self.head();
            (h.rows, h.cols, h.buf.addr())
        };
        check_len(hidden, rows * cols, "hidden states")?;
        let out = with_table!(self.logits, |g| self.fit(&mut g, rows * vocab, 4))?;
        let g = Gemm { x: hidden.addr()?, w, out, n: rows, rows: vocab, cols, out_f32: true };
        // SAFETY: hidden holds rows × D, the head vocab × D, the logits buffer rows × vocab f32.
        unsafe { self.gemm(&g) }
    }

    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let vocab = self.head().rows;
        out.resize(rows * vocab, 0.0);
        self.logits.get()?.download(&mut self.dev, 0, out)
    }

    fn read(&mut self, a: &Self::Act, len: usize, out: &mut Vec<f32>) -> Result<()> {
        check_len(a, len, "read")?;
        let mut tmp = std::mem::take(&mut self.host.read);
        tmp.resize(len, bf16::ZERO);
        let r = a.get()?.download(&mut self.dev, 0, &mut tmp);
        out.clear();
        out.extend(tmp.iter().map(|v| v.to_f32()));
        self.host.read = tmp;
        r
    }
}

fn check_len<B>(a: &Grow<B>, need: usize, what: &str) -> Result<()> {
    if a.len < need {
        return Err(Error::Device(format!("{what}: buffer holds {} elements, the op needs {need}", a.len)));
    }
    Ok(())
}

/// A Qwen3 model on a kernel-running device.
pub struct GpuModel<D: Device> {
    // Field order is drop order: graphs go before the buffers they reference and the device (module,
    // stream) they run on.
    graphs: GraphCache<D::Graph>,
    acts: Acts<Grow<D::Buf>>,
    pub ops: GpuOps<D>,
    layout: CallLayout,
}

impl<D: Device> GpuModel<D> {
    /// Uploads `model`'s weights as bf16 and allocates a zeroed bf16 KV buffer of `n_slots` slots.
    pub fn new(mut dev: D, model: &Qwen3, n_slots: usize) -> Result<Self> {
        let cfg = model.config.clone();
        let w = &model.weights;
        let dv = &mut dev;
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    input_norm: upload_new(dv, &bf16_vec(&l.input_norm))?,
                    qkv: upload_mat(dv, &l.qkv)?,
                    q_norm: upload_new(dv, &bf16_vec(&l.q_norm))?,
                    k_norm: upload_new(dv, &bf16_vec(&l.k_norm))?,
                    o_proj: upload_mat(dv, &l.o_proj)?,
                    post_norm: upload_new(dv, &bf16_vec(&l.post_norm))?,
                    gate_up: upload_mat(dv, &l.gate_up)?,
                    down: upload_mat(dv, &l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let kv_bytes = cfg.num_hidden_layers * 2 * n_slots * cfg.kv_width() * 2;
        let kv = DevBuf::alloc(dv, kv_bytes).map_err(|e| {
            Error::KvCapacity(format!("cannot allocate {kv_bytes} bytes of bf16 KV on the device: {e}"))
        })?;
        let ops = GpuOps {
            embed: upload_mat(dv, &w.embed)?,
            lm_head: w.lm_head.as_ref().map(|m| upload_mat(dv, m)).transpose()?,
            layers,
            final_norm: upload_new(dv, &bf16_vec(&w.final_norm))?,
            inv_freq: upload_new(dv, model.inv_freq())?,
            kv,
            n_slots,
            rows: Grow::default(),
            ids: Grow::default(),
            out_rows: Grow::default(),
            selected: Grow::default(),
            vectors: Grow::default(),
            host: HostTables::default(),
            attn_ws: Grow::default(),
            logits: Grow::default(),
            uniforms: Grow::default(),
            picked: Grow::default(),
            latent: None,
            moved: 0,
            sizing: false,
            capture_refused: None,
            cfg,
            dev,
        };
        Ok(GpuModel { graphs: GraphCache::default(), acts: Acts::default(), ops, layout: CallLayout::default() })
    }

    /// The layout of the last call.
    pub fn layout(&self) -> &CallLayout {
        &self.layout
    }

    /// Turns graph capture and replay on (the default) or off (every call launched op by op: per-kernel
    /// attribution in Nsight, or to rule graphs out). Dropping them frees the captured graphs.
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs.set_enabled(on);
    }

    /// Graph captures and replays so far.
    pub fn graph_stats(&self) -> GraphStats {
        self.graphs.stats()
    }

    /// One forward call, with [`Qwen3::forward`]'s contract: hidden states (bf16 values as f32) land in
    /// `out.hidden`, f32 logits in `out.logits`; the rows advance only on success.
    pub fn forward(&mut self, steps: &mut [RowStep<'_>], logits: bool, out: ForwardOut<'_>) -> Result<()> {
        self.forward_inner(steps, logits, true, out)
    }

    /// A decode forward whose logits stay on the device for [`GpuModel::sample`]: only the hidden states are
    /// downloaded (`out.logits` is cleared).
    pub fn forward_for_sampling(&mut self, steps: &mut [RowStep<'_>], out: ForwardOut<'_>) -> Result<()> {
        self.forward_inner(steps, true, false, out)
    }

    fn forward_inner(
        &mut self,
        steps: &mut [RowStep<'_>],
        logits: bool,
        download_logits: bool,
        out: ForwardOut<'_>,
    ) -> Result<()> {
        let cfg = self.ops.cfg.clone();
        plan_call(&cfg, self.ops.n_slots, steps, &mut self.layout)?;
        let key = self.graphs.key(&mut self.layout, steps, logits, out.capture.is_some());
        self.ops.begin(steps, &self.layout)?;
        match key {
            Some(key) => self.graphs.run(key, &cfg, &mut self.ops, &mut self.acts, &self.layout, steps, logits)?,
            None => forward_ops(&cfg, &mut self.ops, &mut self.acts, &self.layout, steps, logits, out.capture)?,
        }
        read_outputs(&cfg, &mut self.ops, &self.acts, &self.layout, logits && download_logits, out.hidden, out.logits)?;
        commit_call(steps, cfg.hidden_size);
        Ok(())
    }

    /// Picks the next token of each of the last call's `rows` rows on the device, from the logits it left
    /// there, with the rule of [`crate::sample::Sampler`] (the `argmax` kernel when greedy, else `sample` at
    /// `uniforms[r]`), among ids `< limit`; downloads only the ids.
    pub fn sample(
        &mut self,
        rows: usize,
        params: &SamplingParams,
        uniforms: &[f32],
        limit: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.ops.pick(rows, params, uniforms, limit, out)
    }

    /// Uploads the alignment's `W_aᵀ` (bf16; the identity when realign is off) and target norm.
    pub fn set_alignment(&mut self, align: &Alignment) -> Result<()> {
        let d = self.ops.cfg.hidden_size;
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
        // sized for the largest launch (LATENT_MAX_ROWS rows); zeroed by the allocation
        let ws_bytes = probe.plan()?.workspace_bytes as usize;
        let dev = &mut self.ops.dev;
        self.ops.latent = Some(Latent {
            w_a_t: upload_new(dev, &w_a_t)?,
            target_norm: align.target_norm,
            workspace: DevBuf::alloc(dev, ws_bytes)?,
            out: Grow::default(),
        });
        Ok(())
    }

    /// The latent step's input embedding of each of the last call's `rows` selected hidden states,
    /// `normalize(h · W_a) · target_norm` in bf16 (returned as f32 values), by the `latent_project` kernel.
    pub fn latent_project(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let d = self.ops.cfg.hidden_size;
        let mut lat = self
            .ops
            .latent
            .take()
            .ok_or_else(|| Error::InvalidArgument("latent step before the alignment was uploaded".into()))?;
        let r = self.project_into(&mut lat, rows, d, out);
        self.ops.latent = Some(lat);
        r
    }

    fn project_into(&mut self, lat: &mut Latent<D::Buf>, rows: usize, d: usize, out: &mut Vec<f32>) -> Result<()> {
        let h = &self.acts.hidden;
        if h.len < rows * d {
            return Err(Error::InvalidArgument(format!(
                "latent step over {rows} rows but {} hidden states",
                h.len / d
            )));
        }
        let out_addr = self.ops.fit(&mut lat.out, rows * d, 2)?;
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(LATENT_MAX_ROWS as usize);
            let p = LatentParams {
                h: h.addr()? + (r0 * d * 2) as DevPtr,
                in_rows: 0,
                w_a_t: lat.w_a_t.addr(),
                out: out_addr + (r0 * d * 2) as DevPtr,
                out_rows: 0,
                workspace: lat.workspace.addr(),
                n_rows: n as u32,
                dim: d as u32,
                target_norm: lat.target_norm,
                _pad: 0,
            };
            self.ops.launch(&p)?;
            r0 += n;
        }
        // through the host read scratch: a latent step allocates nothing once it has grown
        let mut tmp = std::mem::take(&mut self.ops.host.read);
        tmp.resize(rows * d, bf16::ZERO);
        let r = lat.out.get()?.download(&mut self.ops.dev, 0, &mut tmp);
        out.clear();
        out.extend(tmp.iter().map(|v| v.to_f32()));
        self.ops.host.read = tmp;
        r
    }

    /// Layer `layer`'s K and V planes as f32 `[slots, KVH, d]` (tests).
    pub fn kv_layer_f32(&mut self, layer: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let plane = self.ops.n_slots * self.ops.cfg.kv_width();
        let mut k = vec![bf16::ZERO; plane];
        let mut v = vec![bf16::ZERO; plane];
        self.ops.kv.download(&mut self.ops.dev, 2 * layer * plane * 2, &mut k)?;
        self.ops.kv.download(&mut self.ops.dev, (2 * layer + 1) * plane * 2, &mut v)?;
        let f = |x: Vec<bf16>| x.iter().map(|v| v.to_f32()).collect();
        Ok((f(k), f(v)))
    }

    /// Bytes of the bf16 KV buffer.
    pub fn kv_bytes(&self) -> u64 {
        self.ops.kv.bytes() as u64
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.ops.dev
    }

    /// The device, mutably (benchmarks measure its ceilings).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.ops.dev
    }
}
