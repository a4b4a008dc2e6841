//! Kernel microbenchmarks: each of our kernels alone, at a model's shapes, on any [`Device`]. A
//! [`KernelCase`] owns its (zeroed) device buffers and params; `launch` queues one launch. benches/ops.rs
//! times them on a GPU (`cargo bench --bench ops -- kernels`); tests/emu_backend.rs launches every case once
//! on the emu device at a tiny shape, so the cases' params and buffer sizes are checked where no GPU exists.
//!
//! `bytes` is the least a launch must move to or from memory (every operand read once, every output written
//! once): bytes / time is the kernel's achieved bandwidth, to compare with the device's copy bandwidth.
//!
//! Operations: [`kernel_cases`], [`KernelCase::launch`].

use half::bf16;

use super::{DevBuf, Device};
use crate::error::Result;
use crate::kernels::{
    AddRmsNormParams, ArgmaxParams, AttnDecode, AttnParams, AttnPrefill, DevPtr, EmbedParams, KernelOp, LatentParams,
    QkNormRopeParams, RmsNormParams, Row, SwigluParams,
};
use crate::model::config::Qwen3Config;

/// The op a case launches.
#[derive(Clone, Copy)]
enum Op {
    RmsNorm(RmsNormParams),
    AddRmsNorm(AddRmsNormParams),
    QkNormRope(QkNormRopeParams),
    AttnPrefill(AttnPrefill),
    AttnDecode(AttnDecode),
    Swiglu(SwigluParams),
    Embed(EmbedParams),
    Latent(LatentParams),
    Argmax(ArgmaxParams),
}

/// One kernel at one shape, with its buffers.
pub struct KernelCase<B> {
    /// `op/shape`, e.g. `attn_decode/b16_ctx300`.
    pub name: String,
    /// Bytes one launch moves at least (operands read once, outputs written once).
    pub bytes: u64,
    op: Op,
    _buffers: Vec<DevBuf<B>>,
}

impl<B> KernelCase<B> {
    /// Queues one launch of the case's kernel(s).
    pub fn launch<D: Device<Buf = B>>(&self, dev: &mut D) -> Result<()> {
        // SAFETY: every pointer in the params addresses one of `_buffers`, allocated by `kernel_cases` for
        // the op's full extent at these params and alive as long as `self`.
        unsafe {
            match &self.op {
                Op::RmsNorm(p) => dev.launch(p),
                Op::AddRmsNorm(p) => dev.launch(p),
                Op::QkNormRope(p) => dev.launch(p),
                Op::AttnPrefill(p) => dev.launch(p),
                Op::AttnDecode(p) => dev.launch(p),
                Op::Swiglu(p) => dev.launch(p),
                Op::Embed(p) => dev.launch(p),
                Op::Latent(p) => dev.launch(p),
                Op::Argmax(p) => dev.launch(p),
            }
        }
    }
}

/// Builds cases, keeping their buffers.
struct Builder<'d, D: Device> {
    dev: &'d mut D,
    cases: Vec<KernelCase<D::Buf>>,
    bufs: Vec<DevBuf<D::Buf>>,
}

impl<D: Device> Builder<'_, D> {
    fn buf(&mut self, bytes: usize) -> Result<DevPtr> {
        let b = DevBuf::alloc(self.dev, bytes)?;
        let a = b.addr();
        self.bufs.push(b);
        Ok(a)
    }
    fn upload<T: bytemuck::Pod>(&mut self, data: &[T]) -> Result<DevPtr> {
        let b = DevBuf::alloc(self.dev, std::mem::size_of_val(data))?;
        b.upload(self.dev, 0, data)?;
        let a = b.addr();
        self.bufs.push(b);
        Ok(a)
    }
    fn push<P: KernelOp>(&mut self, name: String, bytes: usize, op: Op, probe: &P) -> Result<()> {
        probe.plan()?;
        self.cases.push(KernelCase { name, bytes: bytes as u64, op, _buffers: std::mem::take(&mut self.bufs) });
        Ok(())
    }
}

/// Every kernel of the forward at `cfg`'s shapes: norms at 1 and `prefill` rows, q/k norm + RoPE and prefill
/// attention over a `prefill`-token row, decode attention for batch 1 and `batch` rows at context `ctx`,
/// SwiGLU, the embedding gather, the latent projection and argmax over the vocabulary.
pub fn kernel_cases<D: Device>(
    dev: &mut D,
    cfg: &Qwen3Config,
    prefill: usize,
    ctx: usize,
    batch: usize,
) -> Result<Vec<KernelCase<D::Buf>>> {
    let mut b = Builder { dev, cases: Vec::new(), bufs: Vec::new() };
    let (d, inter, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (h, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (qkv_w, q_w, kv_w) = (cfg.qkv_width(), cfg.q_width(), cfg.kv_width());
    let eps = cfg.rms_norm_eps as f32;
    let ones = vec![bf16::ONE; d.max(hd)];

    for n in [1, prefill] {
        let p = RmsNormParams {
            x: b.buf(n * d * 2)?,
            weight: b.upload(&ones[..d])?,
            out: b.buf(n * d * 2)?,
            rows: n as u32,
            dim: d as u32,
            eps,
            _pad: 0,
        };
        b.push(format!("rmsnorm/n{n}"), (2 * n * d + d) * 2, Op::RmsNorm(p), &p)?;
        let p = AddRmsNormParams {
            residual: b.buf(n * d * 2)?,
            delta: b.buf(n * d * 2)?,
            weight: b.upload(&ones[..d])?,
            out: b.buf(n * d * 2)?,
            rows: n as u32,
            dim: d as u32,
            eps,
            _pad: 0,
        };
        b.push(format!("add_rmsnorm/n{n}"), (4 * n * d + d) * 2, Op::AddRmsNorm(p), &p)?;
        let p = SwigluParams {
            gate_up: b.buf(n * 2 * inter * 2)?,
            out: b.buf(n * inter * 2)?,
            n: n as u32,
            inter: inter as u32,
        };
        b.push(format!("swiglu/n{n}"), 3 * n * inter * 2, Op::Swiglu(p), &p)?;
    }

    // one row of `prefill` new tokens on an empty cache
    let n = prefill;
    let row = [Row { q_start: 0, q_len: n as u32, slot_base: 0, past_len: 0, pos_base: 0, _pad: 0 }];
    let inv_freq: Vec<f32> = (0..hd / 2).map(|i| (cfg.rope_theta as f32).powf(-2.0 * i as f32 / hd as f32)).collect();
    let p = QkNormRopeParams {
        qkv: b.buf(n * qkv_w * 2)?,
        q_norm: b.upload(&ones[..hd])?,
        k_norm: b.upload(&ones[..hd])?,
        inv_freq: b.upload(&inv_freq)?,
        k_cache: b.buf(n * kv_w * 2)?,
        v_cache: b.buf(n * kv_w * 2)?,
        rows: b.upload(&row)?,
        n_rows: 1,
        n_tokens: n as u32,
        n_heads: h as u32,
        n_kv_heads: kvh as u32,
        head_dim: hd as u32,
        n_slots: n as u32,
        eps,
        _pad: 0,
    };
    b.push(format!("qk_norm_rope_kv/n{n}"), n * (qkv_w + 2 * kv_w + q_w) * 2, Op::QkNormRope(p), &p)?;
    let attn = |b: &mut Builder<'_, D>, rows: &[Row], n_tokens: usize, slots: usize, max_q: usize, max_kv: usize| {
        Ok::<_, crate::Error>(AttnParams {
            q: b.buf(n_tokens * qkv_w * 2)?,
            k_cache: b.buf(slots * kv_w * 2)?,
            v_cache: b.buf(slots * kv_w * 2)?,
            out: b.buf(n_tokens * q_w * 2)?,
            rows: b.upload(rows)?,
            workspace: 0,
            n_rows: rows.len() as u32,
            n_tokens: n_tokens as u32,
            n_heads: h as u32,
            n_kv_heads: kvh as u32,
            head_dim: hd as u32,
            q_stride: qkv_w as u32,
            max_q_len: max_q as u32,
            max_kv_len: max_kv as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            _pad: 0,
        })
    };
    let p = AttnPrefill(attn(&mut b, &row, n, n, n, n)?);
    b.push(format!("attn_prefill/n{n}"), n * (q_w * 2 + 2 * kv_w) * 2, Op::AttnPrefill(p), &p)?;
    for rows_n in [1, batch] {
        // each row: ctx - 1 cached tokens plus the new one, rows side by side in the buffer
        let rows: Vec<Row> = (0..rows_n)
            .map(|r| Row {
                q_start: r as u32,
                q_len: 1,
                slot_base: (r * ctx) as u32,
                past_len: (ctx - 1) as u32,
                pos_base: 0,
                _pad: 0,
            })
            .collect();
        let mut p = AttnDecode(attn(&mut b, &rows, rows_n, rows_n * ctx, 1, ctx)?);
        let ws = p.plan()?.workspace_bytes as usize;
        p.0.workspace = b.buf(ws)?;
        let bytes = rows_n * (ctx * 2 * kv_w + 2 * q_w) * 2;
        b.push(format!("attn_decode/b{rows_n}_ctx{ctx}"), bytes, Op::AttnDecode(p), &p)?;
    }

    let ids: Vec<u32> = (0..n).map(|i| (i * 7919 % vocab) as u32).collect();
    let p = EmbedParams {
        ids: b.upload(&ids)?,
        out_rows: 0,
        table: b.buf(vocab * d * 2)?,
        out: b.buf(n * d * 2)?,
        n: n as u32,
        dim: d as u32,
        vocab: vocab as u32,
        _pad: 0,
    };
    b.push(format!("embed/n{n}"), 2 * n * d * 2 + n * 4, Op::Embed(p), &p)?;

    let mut p = LatentParams {
        h: b.buf(d * 2)?,
        in_rows: 0,
        w_a_t: b.buf(d * d * 2)?,
        out: b.buf(d * 2)?,
        out_rows: 0,
        workspace: 0,
        n_rows: 1,
        dim: d as u32,
        target_norm: 1.0,
        _pad: 0,
    };
    p.workspace = b.buf(p.plan()?.workspace_bytes as usize)?; // zeroed, as the kernel requires
    b.push("latent_project/rows1".into(), (d * d + 2 * d) * 2, Op::Latent(p), &p)?;

    let p = ArgmaxParams {
        logits: b.buf(vocab * 4)?,
        out: b.buf(4)?,
        n_rows: 1,
        stride: vocab as u32,
        vocab_limit: vocab as u32,
        _pad: 0,
    };
    b.push("argmax/rows1".into(), vocab * 4, Op::Argmax(p), &p)?;
    Ok(b.cases)
}
