//! `latentmas report`: results files → a side-by-side table per (task, method) and an optional chart; the
//! files may be the shards of one run (`eval --shard I/N`), which are merged.
//!
//! Public operations:
//! - [`build_report`]: read results files → [`Report`] (summaries in first-seen order, the merged records,
//!   warnings).
//! - [`Report`]: `Display` is the table; [`Report::svg`] the chart ([`super::chart::render_svg`]);
//!   [`Report::write_svg`] writes it; [`Report::write_merged`] writes the merged records as one results
//!   file.
//!
//! A report never changes its input files. Reading is lenient about damage (unparsable lines, partial
//! last lines: skipped with a warning) but strict about meaning: a missing file is an error, and so is an
//! item recorded twice for one (task, method) (the same file given twice, overlapping shards) and records
//! of one (task, method) produced differently (another model, device, data file or setting: a merge would
//! average unlike things). Both errors name the files and lines.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::chart::render_svg;
use super::provenance::Provenance;
use super::record::{read_results, Record};
use super::summary::{Summary, SummaryTable};
use super::task::Task;
use latentmas::error::{Error, Result};

/// Summaries of every (task, method) found.
#[derive(Debug, Clone)]
pub struct Report {
    /// In the order each (task, method) first appears across the files.
    pub summaries: Vec<Summary>,
    /// Every record read, grouped in the order of `summaries`, each group in reading order.
    pub records: Vec<Record>,
    /// Human-readable notes about skipped lines.
    pub warnings: Vec<String>,
}

impl Report {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        render_svg(&self.summaries)
    }

    /// Writes the chart to `path` (whole or not at all).
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        crate::output::write_atomic(path, self.svg().as_bytes(), "--plot")
    }

    /// Writes every record as one results file at `path`, which must not exist yet (whole or not at all).
    pub fn write_merged(&self, path: &Path) -> Result<()> {
        if path.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "--merge {}: already exists; give a new file name",
                path.display()
            )));
        }
        let mut text = Vec::new();
        for r in &self.records {
            serde_json::to_writer(&mut text, r)
                .map_err(|e| Error::Json { path: path.to_path_buf(), message: e.to_string() })?;
            text.push(b'\n');
        }
        crate::output::write_atomic(path, &text, "--merge")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SummaryTable(&self.summaries).fmt(f)
    }
}

/// Where a record was read.
struct Origin<'a> {
    path: &'a Path,
    line: usize,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// One (task, method) being merged.
struct Group<'a> {
    records: Vec<Record>,
    /// The first record's provenance and where it came from; every other record must match it.
    provenance: (Option<Provenance>, Origin<'a>),
    /// Item id → where it was read.
    ids: HashMap<String, Origin<'a>>,
}

/// Reads `paths` (in order) and summarises each (task, method). Errors when a file is missing or cannot
/// be read, when an item appears twice for one (task, method), when records of one (task, method) were
/// produced differently, and when no record is found at all.
pub fn build_report(paths: &[PathBuf]) -> Result<Report> {
    let mut warnings = Vec::new();
    let mut order: Vec<(Task, String)> = Vec::new();
    let mut groups: HashMap<(Task, String), Group> = HashMap::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidArgument(format!("results file {} does not exist", path.display())))
            }
            Err(e) => return Err(Error::io(path, e)),
            Ok(m) if m.is_dir() => {
                return Err(Error::InvalidArgument(format!(
                    "{} is a directory; give the results files in it",
                    path.display()
                )))
            }
            Ok(_) => {}
        }
        let file = read_results(path)?;
        for (line, reason) in &file.bad_lines {
            warnings.push(format!("{}:{line}: skipped, not a results record: {reason}", path.display()));
        }
        if file.partial_tail {
            warnings.push(format!("{}: skipped a partial last line", path.display()));
        }
        if let Some(why) = &file.foreign_tail {
            warnings.push(format!("{}: skipped the last line: {why}", path.display()));
        }
        for (r, line) in file.records.into_iter().zip(file.lines) {
            let here = Origin { path, line };
            let key = (r.task, r.method.clone());
            let group = match groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    order.push(key.clone());
                    let first = Origin { path, line };
                    groups.entry(key).or_insert(Group {
                        records: Vec::new(),
                        provenance: (r.provenance.clone(), first),
                        ids: HashMap::new(),
                    })
                }
            };
            if group.provenance.0 != r.provenance {
                let diff = match (&group.provenance.0, &r.provenance) {
                    (Some(a), Some(b)) => a.differences(b).join("; "),
                    (Some(_), None) => "provenance: recorded vs (none: an older latentmas)".to_string(),
                    (None, _) => "provenance: (none: an older latentmas) vs recorded".to_string(),
                };
                return Err(Error::InvalidArgument(format!(
                    "{} / {}: {} and {here} were produced differently ({diff}); only records of one run (or its \
                     shards) can be merged",
                    r.task, r.method, group.provenance.1
                )));
            }
            if let Some(first) = group.ids.get(&r.id) {
                return Err(Error::InvalidArgument(format!(
                    "{} / {}: item {:?} is recorded twice, at {first} and {here}; each item must come from one \
                     file (a file given twice, or overlapping shards?)",
                    r.task, r.method, r.id
                )));
            }
            group.ids.insert(r.id.clone(), here);
            group.records.push(r);
        }
    }
    if order.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::InvalidArgument(format!("no results records in {}", names.join(", "))));
    }
    let summaries: Vec<Summary> = order
        .iter()
        .map(|key| Summary::from_records(key.0, &key.1, groups.get(key).map(|g| &g.records).into_iter().flatten()))
        .collect();
    let records = order.iter().filter_map(|key| groups.remove(key)).flat_map(|g| g.records).collect();
    Ok(Report { summaries, records, warnings })
}
