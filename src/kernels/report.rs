//! The `ptxas -v` resource report of the embedded kernels: registers, spills, static shared memory and
//! stack per kernel and architecture, parsed by build.rs and embedded as JSON. Zero spills is the target;
//! build.rs also warns at build time about any spill.

#[cfg(feature = "cli")]
use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(feature = "cli")]
use super::{AttnDecode, AttnParams, AttnPrefill, KernelOp, KERNELS_STATUS, NVCC_VERSION};
#[cfg(feature = "cli")]
use crate::table::{self, Align::Left, Align::Right};

static REPORT_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/kernel_report.json"));

/// Resources of one kernel for one architecture (`ptxas -v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub name: String,
    /// `sm_90a` or `sm_80`.
    pub arch: String,
    pub registers: u32,
    /// Bytes spilled to local memory (0 is the target).
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Static shared memory; dynamic shared memory is per launch (see [`super::Launch::shared_bytes`]).
    pub shared_bytes: u32,
    /// Stack frame bytes (local arrays the compiler could not keep in registers).
    pub stack_bytes: u32,
}

/// Every kernel × architecture of the embedded fatbin (empty when built without nvcc), sorted by name.
pub fn kernel_report() -> Vec<KernelInfo> {
    serde_json::from_str(REPORT_JSON).expect("build.rs writes a valid kernel report")
}

/// [`kernel_report`] as a table (Display).
#[cfg(feature = "cli")]
pub struct KernelTable(pub Vec<KernelInfo>);

#[cfg(feature = "cli")]
impl fmt::Display for KernelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no CUDA kernels in this build: {KERNELS_STATUS}");
        }
        let mut t = table::with_header(&[
            ("kernel", Left),
            ("arch", Left),
            ("regs", Right),
            ("spill st B", Right),
            ("spill ld B", Right),
            ("static smem", Right),
            ("stack", Right),
        ]);
        for k in &self.0 {
            t.add_row(vec![
                k.name.clone(),
                k.arch.clone(),
                k.registers.to_string(),
                k.spill_stores.to_string(),
                k.spill_loads.to_string(),
                k.shared_bytes.to_string(),
                k.stack_bytes.to_string(),
            ]);
        }
        f.write_str(&table::render(&t))?;
        let spilling: Vec<&KernelInfo> = self.0.iter().filter(|k| k.spill_stores + k.spill_loads > 0).collect();
        if spilling.is_empty() {
            writeln!(f, "{} entries, no spills", self.0.len())?;
        } else {
            writeln!(f, "{} entries, {} SPILL:", self.0.len(), spilling.len())?;
            for k in spilling {
                writeln!(f, "  {} ({}): {} B stored, {} B loaded", k.name, k.arch, k.spill_stores, k.spill_loads)?;
            }
        }
        // dynamic shared memory is a launch parameter: show it for Qwen3's head_dim
        let attn = AttnParams {
            n_heads: 16,
            n_kv_heads: 8,
            head_dim: 128,
            q_stride: 2048,
            n_rows: 1,
            max_q_len: 1,
            max_kv_len: 1,
            ..Default::default()
        };
        if let (Ok(pre), Ok(dec)) = (AttnPrefill(attn).plan(), AttnDecode(attn).plan()) {
            writeln!(
                f,
                "dynamic shared memory at head_dim 128: {} {} B, {} {} B",
                pre.launches[0].kernel,
                pre.launches[0].shared_bytes,
                dec.launches[0].kernel,
                dec.launches[0].shared_bytes
            )?;
        }
        write!(f, "nvcc: {NVCC_VERSION}")
    }
}

/// Prints the report: a table, or with `json` the JSON array
/// `[{"name", "arch", "registers", "spill_stores", "spill_loads", "shared_bytes", "stack_bytes"}]`.
/// Output errors (a closed pipe, `latentmas kernels | head`) are ignored.
#[cfg(feature = "cli")]
pub fn print_kernel_table(json: bool) {
    use std::io::Write;
    let report = kernel_report();
    let text = if json {
        serde_json::to_string_pretty(&report).expect("serialisable")
    } else {
        KernelTable(report).to_string()
    };
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
