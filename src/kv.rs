//! The ONE preallocated KV buffer that all agents of all questions share ("latent working memory").
//!
//! Layout: `[layer][K|V][slot][kv_head][head_dim]`, f32 on the cpu backend. It is allocated once, sized from
//! a budget, and never grows. Questions own contiguous slot ranges ([`KvRow`]); agents append to their row.
//! Every append is checked against the row's capacity first: a full row is an error, never an overwrite.
//!
//! Operations: [`KvBuffer::new`], [`KvBuffer::reserve`] (carve a row), [`KvBuffer::reset`] (free all rows),
//! [`KvBuffer::layer_mut`], [`KvRow::check_append`], [`KvBuffer::splice`] (move a token range inside the buffer).

use crate::error::{Error, Result};
use crate::model::config::Qwen3Config;

/// How big the buffer is, as the user says it: in tokens (slots) or in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBudget {
    Tokens(usize),
    Bytes(u64),
}

/// The byte units `--kv-budget` accepts, for its error message.
const UNITS: &str = "tok, B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";

/// Slots and bytes above these are refused as they are parsed (2^40 slots; 2^60 bytes): no machine holds
/// them, and every product later made from them then stays far from `u64`/`usize` overflow.
pub const MAX_TOKENS: usize = 1 << 40;
const MAX_BYTES: f64 = (1u64 << 60) as f64;

impl std::fmt::Display for KvBudget {
    /// As the user writes it: `8192tok` or a byte count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvBudget::Tokens(t) => write!(f, "{t}tok"),
            KvBudget::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

impl std::str::FromStr for KvBudget {
    type Err = Error;
    /// `4096tok` / `4096tokens` → tokens; `512MiB`, `2GB`, `1TiB`, `1048576` (plain = bytes) → bytes.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let bad = || {
            Error::InvalidArgument(format!(
                "--kv-budget {s:?}: expected auto, a token count (8192tok) or a size in bytes (512MiB, 2GB, a plain \
                 number); units: {UNITS}"
            ))
        };
        let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "tok" | "tokens" | "t" => {
                if value.fract() != 0.0 || value < 1.0 {
                    return Err(bad());
                }
                if value > MAX_TOKENS as f64 {
                    return Err(Error::InvalidArgument(format!(
                        "--kv-budget {s:?}: more than {MAX_TOKENS} tokens is not a buffer any machine can hold"
                    )));
                }
                return Ok(KvBudget::Tokens(value as usize));
            }
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tb" => 1e12,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        let bytes = value * mult;
        if bytes > MAX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "--kv-budget {s:?}: more than 2^60 bytes is not a buffer any machine can hold"
            )));
        }
        Ok(KvBudget::Bytes(bytes as u64))
    }
}

/// A question's (or a parallel expert's) slot range and fill level.
///
/// Invariants: `len <= capacity`; slot `slot_base + j` holds the token at RoPE position `pos_base + j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvRow {
    pub slot_base: usize,
    pub capacity: usize,
    pub pos_base: usize,
    pub len: usize,
}

impl KvRow {
    /// Fails (before any work) when `n` more tokens do not fit.
    pub fn check_append(&self, n: usize) -> Result<()> {
        if self.len.checked_add(n).is_none_or(|end| end > self.capacity) {
            return Err(Error::KvCapacity(format!(
                "row at slot {} is full: it holds {} of {} tokens and {} more were asked for; raise --kv-budget",
                self.slot_base, self.len, self.capacity, n
            )));
        }
        Ok(())
    }

    /// A sub-row starting `offset` slots into this one, whose tokens take positions `pos_base + offset + j`
    /// (the parallel topology lays experts out where they would sit in the chain).
    pub fn sub_row(&self, offset: usize, capacity: usize) -> Result<KvRow> {
        if offset.checked_add(capacity).is_none_or(|end| end > self.capacity) {
            return Err(Error::KvCapacity(format!(
                "sub-row of {capacity} slots at offset {offset} exceeds its row's capacity {}",
                self.capacity
            )));
        }
        Ok(KvRow { slot_base: self.slot_base + offset, capacity, pos_base: self.pos_base + offset, len: 0 })
    }
}

/// The shared buffer.
pub struct KvBuffer {
    layers: usize,
    /// Floats per slot per layer for K (and again for V): kv_heads · head_dim.
    kv_width: usize,
    slots: usize,
    /// First slot not owned by any row (rows are carved from the front of the window).
    next_free: usize,
    /// The slots [`KvBuffer::reserve`] carves rows from: all of them, unless a run is lent a range
    /// ([`KvBuffer::lend`]) while rows kept elsewhere in the buffer stay untouched.
    window: std::ops::Range<usize>,
    /// Bytes per stored element: 4 (f32, this buffer's own storage) or the device buffer's (2 for bf16).
    elem_bytes: usize,
    /// The K/V values (cpu backend); empty for a bookkeeping-only buffer ([`KvBuffer::bookkeeping`]).
    data: Vec<f32>,
}

impl KvBuffer {
    /// Bytes one token occupies across all layers, K and V.
    pub fn bytes_per_token(cfg: &Qwen3Config) -> u64 {
        Self::per_token_bytes(cfg, std::mem::size_of::<f32>())
    }

    /// Bytes one token takes with `elem_bytes` per element (the config's sizes are bounded, so no overflow).
    fn per_token_bytes(cfg: &Qwen3Config, elem_bytes: usize) -> u64 {
        cfg.num_hidden_layers as u64 * 2 * cfg.kv_width() as u64 * elem_bytes as u64
    }

    /// Slots `budget` holds at `per_token` bytes each; none, or more than can be addressed, is an error
    /// naming the budget as the user wrote it.
    fn slots_for(budget: KvBudget, per_token: u64) -> Result<usize> {
        let slots = match budget {
            KvBudget::Tokens(t) => t as u64,
            KvBudget::Bytes(b) => b / per_token.max(1),
        };
        if slots == 0 {
            return Err(Error::KvCapacity(format!(
                "--kv-budget {budget} holds no token (one token needs {per_token} bytes)"
            )));
        }
        if slots > MAX_TOKENS as u64 || slots.checked_mul(per_token).is_none() {
            return Err(Error::KvCapacity(format!(
                "--kv-budget {budget} is {slots} tokens of {per_token} bytes: more than any machine can hold"
            )));
        }
        Ok(slots as usize)
    }

    /// Allocates the buffer for `budget`. Fails when the budget holds no token at all, or cannot be had.
    pub fn new(cfg: &Qwen3Config, budget: KvBudget) -> Result<Self> {
        let per_token = Self::bytes_per_token(cfg);
        let slots = Self::slots_for(budget, per_token)?;
        let bytes = slots as u64 * per_token;
        let len = usize::try_from(bytes / 4)
            .map_err(|_| Error::KvCapacity(format!("cannot address {bytes} bytes for {slots} KV slots")))?;
        // Zeroed pages from the kernel: a slot's memory becomes resident when a token is first written to it,
        // so a large budget costs nothing up front.
        let mut data = crate::backend::cpu::mem::zeroed_vec::<f32>(len)
            .ok_or_else(|| Error::KvCapacity(format!("cannot allocate {bytes} bytes for {slots} KV slots")))?;
        // Attention walks a slot's rows at a stride of a whole slot: huge pages keep that off the TLB.
        crate::backend::cpu::mem::advise_huge_pages(&mut data);
        Ok(KvBuffer {
            layers: cfg.num_hidden_layers,
            kv_width: cfg.kv_width(),
            slots,
            next_free: 0,
            window: 0..slots,
            elem_bytes: 4,
            data,
        })
    }

    /// Row bookkeeping for a buffer that lives elsewhere (a device's, with `elem_bytes` per element): the same
    /// slots, rows and capacity checks, no storage. [`KvBuffer::layer`], [`KvBuffer::layer_mut`] and
    /// [`KvBuffer::splice`] must not be used on it (they panic / fail).
    pub fn bookkeeping(cfg: &Qwen3Config, budget: KvBudget, elem_bytes: usize) -> Result<Self> {
        let per_token = Self::per_token_bytes(cfg, elem_bytes);
        let slots = Self::slots_for(budget, per_token)?;
        Ok(KvBuffer {
            layers: cfg.num_hidden_layers,
            kv_width: cfg.kv_width(),
            slots,
            next_free: 0,
            window: 0..slots,
            elem_bytes,
            data: Vec::new(),
        })
    }

    /// Total slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots of the window not yet given to a row.
    pub fn free_slots(&self) -> usize {
        self.window.end - self.next_free
    }

    /// Slots rows can be carved from: the whole buffer, or the range lent by [`KvBuffer::lend`].
    pub fn reservable(&self) -> usize {
        self.window.len()
    }

    /// Confines [`KvBuffer::reserve`] and [`KvBuffer::reset`] to `slots`, freeing the rows carved there
    /// before: a program that keeps rows of its own in the buffer lends a free range to a run
    /// (`mas::run::run_batch` resets the buffer), then calls [`KvBuffer::unlend`].
    pub fn lend(&mut self, slots: std::ops::Range<usize>) -> Result<()> {
        if slots.start > slots.end || slots.end > self.slots {
            return Err(Error::InvalidArgument(format!(
                "KV slots {slots:?} are not a range of the buffer's {} slots",
                self.slots
            )));
        }
        self.next_free = slots.start;
        self.window = slots;
        Ok(())
    }

    /// Makes the whole buffer reservable again (every row carved in a lent range is freed).
    pub fn unlend(&mut self) {
        self.window = 0..self.slots;
        self.next_free = 0;
    }

    /// Bytes of the whole allocation.
    pub fn bytes(&self) -> u64 {
        self.bytes_for(self.slots)
    }

    /// Bytes that `tokens` filled slots occupy.
    pub fn bytes_for(&self, tokens: usize) -> u64 {
        (tokens as u64).saturating_mul((self.layers * 2 * self.kv_width * self.elem_bytes) as u64)
    }

    /// Carves a new row of `capacity` slots, positions starting at 0.
    pub fn reserve(&mut self, capacity: usize) -> Result<KvRow> {
        if capacity > self.free_slots() {
            return Err(Error::KvCapacity(format!(
                "need {capacity} slots for a question but only {} of {} are free; raise --kv-budget (one slot = {} bytes)",
                self.free_slots(),
                self.reservable(),
                self.bytes_for(1)
            )));
        }
        let row = KvRow { slot_base: self.next_free, capacity, pos_base: 0, len: 0 };
        self.next_free += capacity;
        Ok(row)
    }

    /// Frees every row (their slots are reused by the next `reserve`).
    pub fn reset(&mut self) {
        self.next_free = self.window.start;
    }

    fn layer_range(&self, layer: usize, v: bool) -> std::ops::Range<usize> {
        let plane = self.slots * self.kv_width;
        let start = (layer * 2 + v as usize) * plane;
        start..start + plane
    }

    /// K and V planes of one layer, each `[slots, kv_heads, head_dim]`.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.data[self.layer_range(layer, false)], &self.data[self.layer_range(layer, true)])
    }

    /// Mutable K and V planes of one layer.
    pub fn layer_mut(&mut self, layer: usize) -> (&mut [f32], &mut [f32]) {
        let plane = self.slots * self.kv_width;
        let start = layer * 2 * plane;
        let (k, v) = self.data[start..start + 2 * plane].split_at_mut(plane);
        (k, v)
    }

    /// Moves `len` slots from `src` to `dst` in every layer's K and V (ranges may overlap). The cpu twin of the
    /// CUDA splice kernel; used to compact a row.
    pub fn splice(&mut self, src: usize, dst: usize, len: usize) -> Result<()> {
        if self.data.is_empty() {
            return Err(Error::InvalidArgument(
                "splice on a bookkeeping-only KV buffer (the device owns the K/V)".into(),
            ));
        }
        let inside = |start: usize| start.checked_add(len).is_some_and(|end| end <= self.slots);
        if !inside(src) || !inside(dst) {
            return Err(Error::KvCapacity(format!(
                "splice of {len} slots from {src} to {dst} is outside the {} slots",
                self.slots
            )));
        }
        let w = self.kv_width;
        for layer in 0..self.layers {
            let (k, v) = self.layer_mut(layer);
            k.copy_within(src * w..(src + len) * w, dst * w);
            v.copy_within(src * w..(src + len) * w, dst * w);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Qwen3Config {
        Qwen3Config {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            max_position_embeddings: 128,
        }
    }

    #[test]
    fn budget_parses_tokens_and_bytes() {
        assert_eq!("4096tok".parse::<KvBudget>().unwrap(), KvBudget::Tokens(4096));
        assert_eq!("2MiB".parse::<KvBudget>().unwrap(), KvBudget::Bytes(2 * 1024 * 1024));
        assert_eq!("1000".parse::<KvBudget>().unwrap(), KvBudget::Bytes(1000));
        assert!("lots".parse::<KvBudget>().is_err());
        assert!("1.5tok".parse::<KvBudget>().is_err());
    }

    #[test]
    fn a_lent_range_confines_reserve_and_reset_and_unlend_restores_the_whole_buffer() {
        let mut kv = KvBuffer::new(&cfg(), KvBudget::Tokens(10)).unwrap();
        kv.lend(4..9).unwrap();
        assert_eq!((kv.reservable(), kv.free_slots()), (5, 5));
        assert_eq!(kv.reserve(3).unwrap().slot_base, 4);
        let err = kv.reserve(3).unwrap_err().to_string();
        assert!(err.contains("only 2 of 5"), "{err}");
        kv.reset();
        assert_eq!(kv.reserve(5).unwrap().slot_base, 4, "reset frees the window, not the buffer's front");
        assert!(kv.lend(8..11).is_err(), "past the buffer's end");
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 6..5;
        assert!(kv.lend(backwards).is_err());
        kv.unlend();
        assert_eq!((kv.reservable(), kv.reserve(10).unwrap().slot_base), (10, 0));
    }

    #[test]
    fn rows_are_carved_and_capacity_is_enforced() {
        let mut kv = KvBuffer::new(&cfg(), KvBudget::Tokens(10)).unwrap();
        assert_eq!(KvBuffer::bytes_per_token(&cfg()), 2 * 2 * 4 * 4);
        let a = kv.reserve(6).unwrap();
        assert_eq!(a.slot_base, 0);
        let err = kv.reserve(5).unwrap_err().to_string();
        assert!(err.contains("only 4 of 10"), "{err}");
        let mut b = kv.reserve(4).unwrap();
        assert_eq!(b.slot_base, 6);
        b.len = 3;
        assert!(b.check_append(1).is_ok());
        assert!(b.check_append(2).unwrap_err().to_string().contains("full"));
        kv.reset();
        assert_eq!(kv.free_slots(), 10);
        assert!(KvBuffer::new(&cfg(), KvBudget::Bytes(10)).is_err());
    }

    #[test]
    fn splice_moves_overlapping_ranges_in_every_layer() {
        let mut kv = KvBuffer::new(&cfg(), KvBudget::Tokens(6)).unwrap();
        for layer in 0..2 {
            let (k, v) = kv.layer_mut(layer);
            for (i, x) in k.iter_mut().enumerate() {
                *x = i as f32;
            }
            for (i, x) in v.iter_mut().enumerate() {
                *x = -(i as f32);
            }
        }
        kv.splice(1, 2, 3).unwrap(); // overlapping, forward
        let (k, v) = kv.layer(1);
        assert_eq!(&k[8..20], &(4..16).map(|i| i as f32).collect::<Vec<_>>()[..]);
        assert_eq!(v[8], -4.0);
        assert!(kv.splice(4, 0, 3).is_err());
    }
}
