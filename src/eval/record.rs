//! The results file: one JSON object per line per scored item, appended as soon as it is known.
//!
//! Public operations:
//! - [`Record`]: one line (field order = the order written).
//! - [`read_results`]: parse a results file → [`ResultsFile`] (records, bad lines, the length of the
//!   complete part).
//! - [`ResultsWriter`]: append records (each `write_all` of a whole line, then flush).
//!
//! Crash safety: a line only counts when it ends in `\n`. A crash can leave a partial last line; readers
//! ignore it and [`ResultsWriter::open`] truncates it away before appending, so it is rewritten, never
//! doubled.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::task::Task;
use crate::error::{Error, Result};

/// One scored item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The dataset item id (unique per task and method in one file).
    pub id: String,
    pub task: Task,
    /// The solver's method label; records are grouped and resumed by (task, method).
    pub method: String,
    /// Normalised answer (code tasks: the extracted program); `null` when nothing was found.
    pub prediction: Option<String>,
    /// Gold answer as text (`pass` for code tasks).
    pub gold: String,
    pub correct: bool,
    /// Tokens the engine generated for this item, all agents together.
    pub output_tokens: u64,
    /// Latent steps run for this item, all agents together.
    pub latent_steps: u64,
    /// Wall seconds the engine attributes to this item.
    pub seconds: f64,
    /// Per-agent accounting from the engine, stored as given.
    #[serde(default)]
    pub agents: serde_json::Value,
    /// Why a code answer failed; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The final agent's raw text, so results can be re-scored without rerunning the model.
    #[serde(default)]
    pub output: String,
}

/// What [`read_results`] found.
#[derive(Debug, Default)]
pub struct ResultsFile {
    pub records: Vec<Record>,
    /// Complete lines that are not records: (1-based line number, reason).
    pub bad_lines: Vec<(usize, String)>,
    /// Byte length of the complete lines; anything after it is a partial line from a crash.
    pub complete_len: u64,
    /// True when a partial last line was found (and ignored).
    pub partial_tail: bool,
}

/// Reads a results file. A missing file reads as empty.
pub fn read_results(path: &Path) -> Result<ResultsFile> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ResultsFile::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut out = ResultsFile {
        complete_len: complete_len as u64,
        partial_tail: complete_len < bytes.len(),
        ..Default::default()
    };
    for (i, line) in bytes[..complete_len].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => out.records.push(r),
            Err(e) => out.bad_lines.push((i + 1, e.to_string())),
        }
    }
    Ok(out)
}

/// Appends records to a results file.
pub struct ResultsWriter {
    file: File,
    path: PathBuf,
}

impl ResultsWriter {
    /// Opens `path` for appending (creating it), first cutting it to `complete_len` bytes so a partial
    /// line left by a crash disappears.
    pub fn open(path: &Path, complete_len: u64) -> Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > complete_len {
            file.set_len(complete_len).map_err(|e| Error::io(path, e))?;
        }
        Ok(ResultsWriter { file, path: path.to_path_buf() })
    }

    /// Writes one record as one line and flushes it to the OS.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| Error::Json { path: self.path.clone(), message: e.to_string() })?;
        line.push('\n');
        // One write of the whole line: a crash leaves at most this line partial.
        self.file.write_all(line.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}
