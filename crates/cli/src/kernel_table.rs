//! `latentmas kernels`: the engine's `ptxas -v` report of the embedded kernels
//! ([`latentmas::kernels::kernel_report`]) as a table or JSON.

use std::fmt;

use latentmas::kernels::{
    kernel_report, AttnDecode, AttnParams, AttnPrefill, KernelInfo, KernelOp, KERNELS_STATUS, NVCC_VERSION,
};

use crate::table::{self, Align::Left, Align::Right};

/// [`kernel_report`] as a table (Display).
pub struct KernelTable(pub Vec<KernelInfo>);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_kernel_or_why_there_is_none() {
        let report = kernel_report();
        let text = KernelTable(report.clone()).to_string();
        if report.is_empty() {
            assert!(text.contains("no CUDA kernels in this build"), "{text}");
        } else {
            assert!(text.contains("no spills"), "{text}");
            assert!(report.iter().all(|k| text.contains(&k.name)), "{text}");
        }
    }
}
