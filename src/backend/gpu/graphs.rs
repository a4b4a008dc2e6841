//! CUDA graphs for the decode and latent steps.
//!
//! A step where every row feeds ONE token (a decode step: one id per row; a latent step: one vector per
//! row) has the same launches, grids and buffers every time for a given set of rows: only the row table,
//! the ids and the input vectors change, and [`ForwardOps::begin`] uploads those into fixed buffers before
//! the graph runs. So such a step is captured once and replayed.
//!
//! What a graph bakes in, and how each is kept valid:
//! - kernel params (pointers, n_rows, max_kv_len, ...): the key holds every count; `max_kv_len` is set to
//!   the rows' largest capacity instead of their current length, so the decode grid and workspace do not
//!   change as the rows grow (the kernels skip chunks past a row's length);
//! - buffer addresses: buffers are grow-only, and any reallocation bumps `GpuOps::moved`; a graph captured
//!   at another `moved` is dropped and the step runs eagerly (which sizes every buffer) before the next
//!   capture. A shape is therefore captured the second time it is seen, never inside its first run.
//! - nothing is allocated or freed inside a capture (CUDA refuses both there): right before recording, the
//!   step's forward runs once as a sizing pass (every buffer fitted, nothing launched), so the recording
//!   finds every buffer large enough. Should a buffer still need to grow while recording, `Grow::fit`
//!   refuses without touching it, the capture is abandoned, and the step runs eagerly (logged with the
//!   reason, counted in `GraphStats::abandoned`).
//!
//! [`ForwardOps::begin`]: crate::backend::ForwardOps::begin

use std::collections::HashMap;

use super::model::GpuOps;
use super::{Device, Grow};
use crate::backend::{Acts, CallLayout};
use crate::error::Result;
use crate::model::config::Qwen3Config;
use crate::model::qwen3::{forward_ops, Input, RowStep};

/// At most this many graphs are kept (a decode and a latent graph per batch shape is the usual need);
/// beyond it the cache starts over.
const MAX_GRAPHS: usize = 32;

/// Everything a captured step's launches depend on besides the uploaded tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphKey {
    n_rows: usize,
    n_ids: usize,
    n_vectors: usize,
    logits: bool,
    max_kv_len: usize,
}

/// Captures and replays so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphStats {
    pub captures: u64,
    pub replays: u64,
    /// Steps that could have used a graph but ran op by op (first sight of a shape, or after a move).
    pub eager: u64,
    /// Captures given up because a buffer would have had to grow while recording (the step ran eagerly).
    pub abandoned: u64,
}

struct Entry<G> {
    graph: G,
    moved: u64,
}

/// The captured graphs of one model.
pub struct GraphCache<G> {
    enabled: bool,
    graphs: HashMap<GraphKey, Entry<G>>,
    /// Shapes run eagerly, with the `moved` count after their run.
    seen: HashMap<GraphKey, u64>,
    stats: GraphStats,
}

impl<G> Default for GraphCache<G> {
    fn default() -> Self {
        GraphCache { enabled: true, graphs: HashMap::new(), seen: HashMap::new(), stats: GraphStats::default() }
    }
}

impl<G> GraphCache<G> {
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.graphs.clear();
            self.seen.clear();
        }
    }

    pub fn stats(&self) -> GraphStats {
        self.stats
    }

    /// The key of a graph-eligible call (every row feeds one token, no per-layer capture), with
    /// `layout.max_kv_len` raised to the rows' capacity; `None` (layout untouched) otherwise.
    pub fn key(
        &mut self,
        layout: &mut CallLayout,
        steps: &[RowStep<'_>],
        logits: bool,
        capture_layers: bool,
    ) -> Option<GraphKey> {
        if !self.enabled || capture_layers || !layout.is_decode() || layout.rows.is_empty() {
            return None;
        }
        let n_ids = steps.iter().filter(|s| matches!(s.input, Input::Tokens(_))).count();
        layout.max_kv_len = steps.iter().map(|s| s.row.capacity).max().unwrap_or(0);
        Some(GraphKey {
            n_rows: layout.rows.len(),
            n_ids,
            n_vectors: layout.rows.len() - n_ids,
            logits,
            max_kv_len: layout.max_kv_len,
        })
    }

    /// Runs the call's device work (everything [`forward_ops`] queues) for `key`: replays its graph when
    /// it is current, captures it when this shape ran eagerly at the current buffer addresses, else runs
    /// eagerly. The call's tables must already be uploaded (`begin`).
    #[allow(clippy::too_many_arguments)]
    pub fn run<D: Device<Graph = G>>(
        &mut self,
        key: GraphKey,
        cfg: &Qwen3Config,
        ops: &mut GpuOps<D>,
        acts: &mut Acts<Grow<D::Buf>>,
        layout: &CallLayout,
        steps: &[RowStep<'_>],
        logits: bool,
    ) -> Result<()> {
        let moved = ops.moved;
        if let Some(e) = self.graphs.get(&key) {
            if e.moved == moved {
                ops.dev.replay(&e.graph)?;
                self.stats.replays += 1;
                return Ok(());
            }
            self.graphs.remove(&key);
        }
        if self.seen.get(&key) == Some(&moved) {
            // Size every buffer first, outside the capture: growing inside it would free and allocate.
            ops.sizing = true;
            let sized = forward_ops(cfg, ops, acts, layout, steps, logits, None);
            ops.sizing = false;
            sized?;
            let moved = ops.moved;
            ops.capture_refused = None;
            ops.dev.begin_capture()?;
            let recorded = forward_ops(cfg, ops, acts, layout, steps, logits, None);
            let graph = ops.dev.end_capture();
            match ops.capture_refused.take() {
                Some(why) => {
                    // nothing ran and nothing moved: drop the partial graph and run the step eagerly below
                    drop(graph);
                    tracing::warn!("graph capture of {key:?} abandoned, the step runs eagerly: {why}");
                    self.stats.abandoned += 1;
                }
                None => {
                    recorded?;
                    let graph = graph?;
                    debug_assert_eq!(ops.moved, moved, "a buffer moved while capturing");
                    ops.dev.replay(&graph)?;
                    self.stats.captures += 1;
                    self.stats.replays += 1;
                    if self.graphs.len() >= MAX_GRAPHS {
                        self.graphs.clear();
                    }
                    self.graphs.insert(key, Entry { graph, moved });
                    return Ok(());
                }
            }
        }
        forward_ops(cfg, ops, acts, layout, steps, logits, None)?;
        self.stats.eager += 1;
        self.seen.insert(key, ops.moved);
        Ok(())
    }
}
