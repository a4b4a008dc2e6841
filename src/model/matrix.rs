//! A weight matrix in host memory, in the dtype the checkpoint gave (bf16 stays bf16: a Qwen3-8B must fit in
//! 24 GiB), or f32. f16 checkpoints are widened to f32 at load time (exact; costs 2× memory).

use half::bf16;

use crate::backend::cpu::mem::advise_huge_pages;

/// Element storage of a [`WeightMatrix`].
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

/// A row-major `[rows, cols]` matrix. For a linear layer, rows = output features, cols = input features
/// (the PyTorch `weight` layout), so `y = x · Wᵀ` reads one contiguous row per output feature.
#[derive(Debug, Clone)]
pub struct WeightMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
}

impl WeightMatrix {
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "WeightMatrix::f32: data length");
        WeightMatrix { rows, cols, data: WeightData::F32(data) }
    }

    pub fn bf16(rows: usize, cols: usize, data: Vec<bf16>) -> Self {
        assert_eq!(data.len(), rows * cols, "WeightMatrix::bf16: data length");
        WeightMatrix { rows, cols, data: WeightData::Bf16(data) }
    }

    /// Bytes held in memory (what one pass over the matrix streams).
    pub fn bytes(&self) -> usize {
        match &self.data {
            WeightData::F32(v) => v.len() * 4,
            WeightData::Bf16(v) => v.len() * 2,
        }
    }

    /// Row `r` widened to f32 (used for embedding lookups, which touch one row per token).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let range = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            WeightData::F32(v) => out.copy_from_slice(&v[range]),
            WeightData::Bf16(v) => {
                for (o, w) in out.iter_mut().zip(&v[range]) {
                    *o = w.to_f32();
                }
            }
        }
    }

    /// The first `rows` rows as an f32 matrix (alignment needs the embeddings in f32).
    pub fn to_f32_rows(&self, rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * self.cols];
        for (r, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, chunk);
        }
        out
    }

    /// Stacks matrices with equal `cols` on top of each other (q|k|v and gate|up fusion: one pass over the
    /// weights per projection group instead of three or two).
    pub fn stack(parts: &[WeightMatrix]) -> WeightMatrix {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == cols), "WeightMatrix::stack: column mismatch");
        let rows = parts.iter().map(|p| p.rows).sum();
        match &parts[0].data {
            WeightData::F32(_) => {
                let mut v = Vec::with_capacity(rows * cols);
                advise_huge_pages(&mut v);
                for p in parts {
                    match &p.data {
                        WeightData::F32(d) => v.extend_from_slice(d),
                        WeightData::Bf16(d) => v.extend(d.iter().map(|x| x.to_f32())),
                    }
                }
                WeightMatrix::f32(rows, cols, v)
            }
            WeightData::Bf16(_) => {
                let mut v = Vec::with_capacity(rows * cols);
                advise_huge_pages(&mut v);
                for p in parts {
                    match &p.data {
                        WeightData::Bf16(d) => v.extend_from_slice(d),
                        WeightData::F32(d) => v.extend(d.iter().map(|&x| bf16::from_f32(x))),
                    }
                }
                WeightMatrix::bf16(rows, cols, v)
            }
        }
    }
}
