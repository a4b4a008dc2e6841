//! The latent step's input: mapping a final-norm hidden state back into the input-embedding space.
//!
//! `e = normalize(h · W_a) · target_norm`, with `W_a = solve(W_outᵀ·W_out + λI, W_outᵀ·W_in)` (a ridge
//! regression of the input embedding on the output embedding, λ = 1e-5, over the tokenizer's rows only) and
//! `target_norm` = mean ‖W_in[r]‖. Realign off keeps the rescale with `W_a = I`.
//!
//! W_a is computed once per model and cached as safetensors next to the model (or in
//! `~/.cache/latentmas/` when the model directory is read-only), keyed by a SHA-256 of both embeddings.
//!
//! Operations: [`Alignment::identity`], [`Alignment::compute`], [`Alignment::load_or_compute`],
//! [`Alignment::project`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::backend::cpu::matmul::matmul;
use crate::error::{Error, Result};
use crate::model::matrix::{WeightData, WeightMatrix};
use crate::model::qwen3::Qwen3;

/// Ridge strength of the alignment solve (the reference's value).
pub const RIDGE_LAMBDA: f64 = 1e-5;
/// Smallest norm the projection divides by.
pub const MIN_NORM: f32 = 1e-6;
/// File name of the cached alignment inside the model directory.
pub const CACHE_FILE: &str = "latentmas_align.safetensors";

/// W_a and target_norm for one model.
pub struct Alignment {
    pub realign: bool,
    /// `W_aᵀ` as a `[D_out, D_in]` weight so `h · W_a` is one `matmul`; `None` = identity (realign off).
    w_a_t: Option<WeightMatrix>,
    pub target_norm: f32,
}

impl Alignment {
    /// Realign off: `e = h / ‖h‖ · target_norm`.
    pub fn identity(target_norm: f32) -> Self {
        Alignment { realign: false, w_a_t: None, target_norm }
    }

    /// W_a as a row-major `[D_in, D_out]` matrix (None when identity).
    pub fn w_a(&self) -> Option<Vec<f32>> {
        let w = self.w_a_t.as_ref()?;
        let d = w.rows;
        let WeightData::F32(t) = &w.data else { return None };
        Some((0..d * d).map(|idx| t[(idx % d) * d + idx / d]).collect())
    }

    /// `out = normalize(h · W_a) · target_norm` (f32).
    pub fn project(&self, h: &[f32], out: &mut [f32]) {
        match &self.w_a_t {
            Some(w) => matmul(h, 1, w, out),
            None => out.copy_from_slice(h),
        }
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(MIN_NORM);
        let scale = self.target_norm / norm;
        for v in out.iter_mut() {
            *v *= scale;
        }
    }

    /// Mean L2 norm of the first `vocab` input-embedding rows. Each row's sum of squares runs in 16
    /// independent f32 lanes (a fixed pairwise tree at the end: one sequential chain of 1024 adds per row
    /// made this a tenth of a second of every LatentMAS run's startup); rows are summed in f64 in fixed
    /// chunks, so the result does not depend on the thread count.
    pub fn target_norm(model: &Qwen3, vocab: usize) -> f32 {
        const ROWS_PER_CHUNK: usize = 1024;
        let d = model.config.hidden_size;
        let chunks: Vec<f64> = (0..vocab.div_ceil(ROWS_PER_CHUNK))
            .into_par_iter()
            .map_init(
                || vec![0f32; d],
                |row, c| {
                    let rows = c * ROWS_PER_CHUNK..((c + 1) * ROWS_PER_CHUNK).min(vocab);
                    rows.map(|r| {
                        model.weights.embed.row_f32(r, row);
                        (sum_of_squares(row) as f64).sqrt()
                    })
                    .sum::<f64>()
                },
            )
            .collect();
        (chunks.iter().sum::<f64>() / vocab as f64) as f32
    }

    /// Solves for W_a over the first `vocab` rows (f32 products, f64 Cholesky solve).
    pub fn compute(model: &Qwen3, vocab: usize) -> Result<Self> {
        let d = model.config.hidden_size;
        let w_in_t = transpose_rows(&model.weights.embed, vocab);
        let w_out_t =
            if model.weights.lm_head.is_some() { Some(transpose_rows(model.weights.lm_head(), vocab)) } else { None };
        let w_out_t_ref = w_out_t.as_ref().unwrap_or(&w_in_t);
        // G = W_outᵀ W_out and R = W_outᵀ W_in, both [D, D].
        let mut gram = vec![0f32; d * d];
        let x = match &w_out_t_ref.data {
            WeightData::F32(v) => v,
            WeightData::Bf16(_) => unreachable!("transpose_rows yields f32"),
        };
        matmul(x, d, w_out_t_ref, &mut gram);
        let mut rhs = vec![0f32; d * d];
        matmul(x, d, &w_in_t, &mut rhs);
        let w_a = ridge_solve(&gram, &rhs, d, RIDGE_LAMBDA)?;
        if w_a.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite(
                "the alignment W_a came out with NaN or Inf (the embeddings hold non-finite values)".into(),
            ));
        }
        // Store transposed: row j of W_aᵀ = column j of W_a.
        let t: Vec<f32> = (0..d * d).map(|idx| w_a[(idx % d) * d + idx / d]).collect();
        Ok(Alignment {
            realign: true,
            w_a_t: Some(WeightMatrix::f32(d, d, t)),
            target_norm: Self::target_norm(model, vocab),
        })
    }

    /// The alignment for `realign`, from the cache when its key matches, else computed and cached.
    /// Returns it and where the cache lives (None for realign off, which needs no cache).
    pub fn load_or_compute(
        model: &Qwen3,
        model_dir: &Path,
        vocab: usize,
        realign: bool,
    ) -> Result<(Self, Option<PathBuf>)> {
        if !realign {
            let norm = Self::target_norm(model, vocab);
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!(
                    "the mean input-embedding norm is {norm} (the embedding holds NaN or Inf)"
                )));
            }
            return Ok((Self::identity(norm), None));
        }
        let key = embedding_key(model, vocab);
        let candidates = cache_paths(model_dir, &key);
        for path in &candidates {
            if let Some(a) = read_cache(path, &key, model.config.hidden_size)? {
                return Ok((a, Some(path.clone())));
            }
        }
        let a = Self::compute(model, vocab)?;
        let mut last_err = None;
        for path in &candidates {
            match write_cache(path, &key, &a) {
                Ok(()) => return Ok((a, Some(path.clone()))),
                Err(e) => last_err = Some(e),
            }
        }
        tracing::warn!("could not cache the alignment: {}", last_err.map(|e| e.to_string()).unwrap_or_default());
        Ok((a, None))
    }
}

/// `Σ v²` in 16 lanes (element i into lane i mod 16), then the lanes pairwise: a fixed order that the
/// compiler vectorises.
fn sum_of_squares(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x * x;
        }
    }
    for (l, x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += x * x;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            lanes[i] += lanes[i + w];
        }
    }
    lanes[0]
}

/// `[vocab, D]` rows → `[D, vocab]` f32.
fn transpose_rows(m: &WeightMatrix, vocab: usize) -> WeightMatrix {
    let d = m.cols;
    let rows = m.to_f32_rows(vocab);
    let mut t = vec![0f32; d * vocab];
    t.par_chunks_exact_mut(vocab).enumerate().for_each(|(c, out)| {
        for (r, o) in out.iter_mut().enumerate() {
            *o = rows[r * d + c];
        }
    });
    WeightMatrix::f32(d, vocab, t)
}

/// Solves `(G + λI) X = R` for symmetric positive definite G (Cholesky in f64).
pub fn ridge_solve(gram: &[f32], rhs: &[f32], d: usize, lambda: f64) -> Result<Vec<f32>> {
    let mut l: Vec<f64> = gram.iter().map(|&v| v as f64).collect();
    for i in 0..d {
        l[i * d + i] += lambda;
    }
    // In-place Cholesky: lower triangle of `l` becomes L with G + λI = L Lᵀ.
    for j in 0..d {
        let mut diag = l[j * d + j];
        for k in 0..j {
            diag -= l[j * d + k] * l[j * d + k];
        }
        if diag <= 0.0 {
            return Err(Error::Other(format!("alignment solve: matrix not positive definite at column {j}")));
        }
        let diag = diag.sqrt();
        l[j * d + j] = diag;
        let (head, tail) = l.split_at_mut((j + 1) * d);
        let row_j = &head[j * d..j * d + j];
        tail.par_chunks_exact_mut(d).for_each(|row_i| {
            let s: f64 = row_i[..j].iter().zip(row_j).map(|(a, b)| a * b).sum();
            row_i[j] = (row_i[j] - s) / diag;
        });
    }
    // Solve column by column: L y = r, Lᵀ x = y.
    let cols: Vec<Vec<f64>> = (0..d)
        .into_par_iter()
        .map(|c| {
            let mut y: Vec<f64> = (0..d).map(|r| rhs[r * d + c] as f64).collect();
            for i in 0..d {
                let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
                y[i] = (y[i] - s) / l[i * d + i];
            }
            for i in (0..d).rev() {
                let s: f64 = (i + 1..d).map(|k| l[k * d + i] * y[k]).sum();
                y[i] = (y[i] - s) / l[i * d + i];
            }
            y
        })
        .collect();
    let mut x = vec![0f32; d * d];
    for (c, col) in cols.iter().enumerate() {
        for (r, &v) in col.iter().enumerate() {
            x[r * d + c] = v as f32;
        }
    }
    Ok(x)
}

/// SHA-256 over the bytes of both embeddings' first `vocab` rows, plus λ and the row count.
fn embedding_key(model: &Qwen3, vocab: usize) -> String {
    let mut h = Sha256::new();
    h.update(format!("latentmas-align-v1 lambda={RIDGE_LAMBDA} vocab={vocab}").as_bytes());
    for m in [&model.weights.embed, model.weights.lm_head()] {
        let n = vocab * m.cols;
        match &m.data {
            WeightData::F32(v) => h.update(bytemuck::cast_slice::<f32, u8>(&v[..n])),
            WeightData::Bf16(v) => h.update(bytemuck::cast_slice::<half::bf16, u8>(&v[..n])),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_paths(model_dir: &Path, key: &str) -> Vec<PathBuf> {
    let mut v = vec![model_dir.join(CACHE_FILE)];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".cache/latentmas").join(format!("align-{}.safetensors", &key[..16])));
    }
    v
}

fn read_cache(path: &Path, key: &str, d: usize) -> Result<Option<Alignment>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    let Ok((_, meta)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        tracing::warn!("{}: unreadable alignment cache, recomputing", path.display());
        return Ok(None);
    };
    if meta.metadata().as_ref().and_then(|m| m.get("embedding_sha256")).map(String::as_str) != Some(key) {
        return Ok(None);
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
    let get = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = st.tensor(name).map_err(|e| Error::Weights(format!("{}: {name}: {e}", path.display())))?;
        let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if v.len() != len {
            return Err(Error::Weights(format!("{}: {name} has {} values, expected {len}", path.display(), v.len())));
        }
        Ok(v)
    };
    let w_a_t = get("w_a_t", d * d)?;
    let target_norm = get("target_norm", 1)?[0];
    // A matching key says which model the cache is for, not that its numbers are sound (a crash or a bit
    // flip may have damaged them): a NaN/Inf cache is refused and recomputed, never fed to the model.
    if !(target_norm.is_finite() && target_norm > 0.0) || w_a_t.iter().any(|v| !v.is_finite()) {
        tracing::warn!("{}: the alignment cache holds NaN or Inf; ignoring it and recomputing", path.display());
        return Ok(None);
    }
    Ok(Some(Alignment { realign: true, w_a_t: Some(WeightMatrix::f32(d, d, w_a_t)), target_norm }))
}

fn write_cache(path: &Path, key: &str, a: &Alignment) -> Result<()> {
    let Some(w) = &a.w_a_t else { return Ok(()) };
    let WeightData::F32(wv) = &w.data else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tn = [a.target_norm];
    let views = [
        (
            "w_a_t",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![w.rows, w.cols],
                bytemuck::cast_slice(wv),
            ),
        ),
        (
            "target_norm",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], bytemuck::cast_slice(&tn)),
        ),
    ];
    let views: Vec<(&str, safetensors::tensor::TensorView)> = views
        .into_iter()
        .map(|(n, v)| v.map(|v| (n, v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Other(e.to_string()))?;
    let meta = HashMap::from([("embedding_sha256".to_string(), key.to_string())]);
    // Write to a temporary name then rename: a crash never leaves a partial cache that looks valid.
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| Error::Other(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_solve_inverts_a_known_system() {
        // G = [[4, 1], [1, 3]], R = G·X for X = [[1, 2], [3, -1]]; λ = 0 recovers X.
        let g = [4.0f32, 1.0, 1.0, 3.0];
        let x = [1.0f32, 2.0, 3.0, -1.0];
        let r = [4.0 + 3.0, 8.0 - 1.0, 1.0 + 9.0, 2.0 - 3.0];
        let got = ridge_solve(&g, &r, 2, 0.0).unwrap();
        for (a, b) in got.iter().zip(&x) {
            assert!((a - b).abs() < 1e-5, "{got:?}");
        }
        assert!(ridge_solve(&[-1.0], &[1.0], 1, 0.0).is_err());
    }

    #[test]
    fn sum_of_squares_is_the_sum_in_its_fixed_lane_order() {
        for len in [0usize, 1, 15, 16, 17, 1024, 1031] {
            let v: Vec<f32> = (0..len).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 37.0).collect();
            let exact: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
            let got = sum_of_squares(&v) as f64;
            assert!((got - exact).abs() <= 1e-6 * exact.max(1e-30), "len {len}: {got} vs {exact}");
            // the order is fixed: the same bits as the lanes written out by hand
            let mut lanes = [0f32; 16];
            for (i, x) in v.iter().enumerate() {
                lanes[i % 16] += x * x;
            }
            let l8: Vec<f32> = (0..8).map(|i| lanes[i] + lanes[i + 8]).collect();
            let l4: Vec<f32> = (0..4).map(|i| l8[i] + l8[i + 4]).collect();
            let want = (l4[0] + l4[2]) + (l4[1] + l4[3]);
            assert_eq!(sum_of_squares(&v).to_bits(), want.to_bits(), "len {len}");
        }
    }

    #[test]
    fn project_rescales_to_target_norm() {
        let a = Alignment::identity(2.0);
        let mut e = [0f32; 2];
        a.project(&[3.0, 4.0], &mut e);
        assert!((e[0] - 1.2).abs() < 1e-6 && (e[1] - 1.6).abs() < 1e-6);
        a.project(&[0.0, 0.0], &mut e);
        assert_eq!(e, [0.0, 0.0]);
    }
}
