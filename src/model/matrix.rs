//! A weight matrix in host memory, in the dtype the checkpoint gave (bf16 stays bf16: a Qwen3-8B must fit in
//! 24 GiB), or f32. f16 checkpoints are widened to f32 at load time (exact; costs 2× memory). A tensor whose
//! bytes can be used as they lie in the checkpoint is not copied at all: it borrows the memory-mapped file.

use std::sync::Arc;

use half::bf16;
use memmap2::Mmap;

/// The elements of a matrix: an owned vector, or a range of a memory-mapped checkpoint file read in place
/// (the page cache's copy, shared with every process that maps the file, and resident only once read).
/// Derefs to `[T]`.
#[derive(Clone)]
pub enum Elems<T> {
    Owned(Vec<T>),
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
}

impl<T: bytemuck::Pod> Elems<T> {
    /// `len` elements at byte `offset` of `map`, or `None` when they cannot be used in place: out of bounds,
    /// not aligned for `T`, or a big-endian host (checkpoints are little-endian).
    pub fn mapped(map: Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>());
        (end <= map.len() && aligned && cfg!(target_endian = "little")).then_some(Elems::Mapped { map, offset, len })
    }

    /// True when the elements are read in place from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Elems::Mapped { .. })
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for Elems<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Elems::Owned(v) => v,
            // alignment and bounds were checked in `Elems::mapped`
            Elems::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + *len * std::mem::size_of::<T>()])
            }
        }
    }
}

impl<T> From<Vec<T>> for Elems<T> {
    fn from(v: Vec<T>) -> Self {
        Elems::Owned(v)
    }
}

impl<T: bytemuck::Pod> std::fmt::Debug for Elems<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Elems({kind}, {} elements)", self.len())
    }
}

/// Element storage of a [`WeightMatrix`].
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Elems<f32>),
    Bf16(Elems<bf16>),
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
        Self::f32_elems(rows, cols, data.into())
    }

    pub fn bf16(rows: usize, cols: usize, data: Vec<bf16>) -> Self {
        Self::bf16_elems(rows, cols, data.into())
    }

    /// [`WeightMatrix::f32`] over owned or mapped elements.
    pub fn f32_elems(rows: usize, cols: usize, data: Elems<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "WeightMatrix::f32: data length");
        WeightMatrix { rows, cols, data: WeightData::F32(data) }
    }

    /// [`WeightMatrix::bf16`] over owned or mapped elements.
    pub fn bf16_elems(rows: usize, cols: usize, data: Elems<bf16>) -> Self {
        assert_eq!(data.len(), rows * cols, "WeightMatrix::bf16: data length");
        WeightMatrix { rows, cols, data: WeightData::Bf16(data) }
    }

    /// True when the matrix is read in place from the memory-mapped checkpoint.
    pub fn is_mapped(&self) -> bool {
        match &self.data {
            WeightData::F32(v) => v.is_mapped(),
            WeightData::Bf16(v) => v.is_mapped(),
        }
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
}
