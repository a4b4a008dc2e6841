//! `latentmas report`: results files → a side-by-side table per (task, method) and an optional chart.
//!
//! Public operations:
//! - [`build_report`]: read results files → [`Report`] (summaries in first-seen order + warnings).
//! - [`Report`]: `Display` is the table; [`Report::svg`] the chart ([`super::chart::render_svg`]);
//!   [`Report::write_svg`] writes it.
//!
//! Reading is lenient (a report never changes the files): unparsable lines and partial last lines are
//! skipped with a warning, and a second record for the same (task, method, id), as when two files
//! overlap, is ignored with a warning counting them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::chart::render_svg;
use super::record::{read_results, Record};
use super::summary::{Summary, SummaryTable};
use super::task::Task;
use crate::error::{Error, Result};

/// Summaries of every (task, method) found.
#[derive(Debug, Clone)]
pub struct Report {
    /// In the order each (task, method) first appears across the files.
    pub summaries: Vec<Summary>,
    /// Human-readable notes about skipped lines and duplicates.
    pub warnings: Vec<String>,
}

impl Report {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        render_svg(&self.summaries)
    }

    /// Writes the chart to `path`.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.svg()).map_err(|e| Error::io(path, e))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SummaryTable(&self.summaries).fmt(f)
    }
}

/// Reads `paths` (in order) and summarises each (task, method). Errors when a file cannot be read or
/// when no record is found at all.
pub fn build_report(paths: &[PathBuf]) -> Result<Report> {
    let mut warnings = Vec::new();
    let mut order: Vec<(Task, String)> = Vec::new();
    let mut groups: HashMap<(Task, String), Vec<Record>> = HashMap::new();
    let mut seen: HashSet<(Task, String, String)> = HashSet::new();
    let mut duplicates: HashMap<(Task, String), usize> = HashMap::new();
    for path in paths {
        let file = read_results(path)?;
        for (line, reason) in &file.bad_lines {
            warnings.push(format!("{}:{line}: skipped, not a results record: {reason}", path.display()));
        }
        if file.partial_tail {
            warnings.push(format!("{}: skipped a partial last line", path.display()));
        }
        for r in file.records {
            let key = (r.task, r.method.clone());
            if !seen.insert((r.task, r.method.clone(), r.id.clone())) {
                *duplicates.entry(key).or_default() += 1;
                continue;
            }
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(r);
        }
    }
    if order.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::InvalidArgument(format!("no results records in {}", names.join(", "))));
    }
    for (task, method) in &order {
        if let Some(n) = duplicates.get(&(*task, method.clone())) {
            warnings.push(format!("{task} / {method}: ignored {n} repeated record(s) of the same item"));
        }
    }
    let summaries =
        order.iter().map(|key| Summary::from_records(key.0, &key.1, groups.get(key).into_iter().flatten())).collect();
    Ok(Report { summaries, warnings })
}
