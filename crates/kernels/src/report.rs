//! The `ptxas -v` resource report of the embedded kernels: registers, spills, static shared memory and
//! stack per kernel and architecture, parsed by build.rs and embedded as JSON. Zero spills is the target;
//! build.rs also warns at build time about any spill.

use serde::{Deserialize, Serialize};

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
