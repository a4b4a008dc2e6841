//! The results file: one JSON object per line per scored item, appended as soon as it is known.
//!
//! Public operations:
//! - [`Record`]: one line (field order = the order written), with the [`Provenance`] of what produced it.
//! - [`read_results`]: parse a results file, read-only → [`ResultsFile`] (records and their line numbers,
//!   bad lines, the length of the complete part, what the unterminated tail is).
//! - [`ResultsStore`]: the one writer of a results file: opened under an exclusive advisory lock
//!   (`flock`), checked to be ours, then appended to (each record one `write(2)` of a whole line).
//!
//! Crash safety: a line only counts when it ends in `\n`. A crash can leave a partial last line; readers
//! ignore it and [`ResultsStore::open`] cuts it away before appending, so it is rewritten, never doubled.
//! Only a tail that is a cut-off record of ours is cut (it starts like our records and is not complete
//! JSON); anything else (a JSON document without a final newline, text) means the file is not ours, and it
//! is left untouched with an error.
//!
//! Concurrency: two writers on one file are refused (the second fails at once, naming the file) rather than
//! interleaved; the lock is taken before the file is read, so nothing read can go stale.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::provenance::Provenance;
use super::task::Task;
use latentmas::error::{Error, Result};

/// How every record line starts (`Record`'s first field); a cut-off tail that does not is not ours.
const RECORD_START: &[u8] = b"{\"id\":";

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
    /// What produced this record (model, device, data, settings); `None` in files of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// What [`read_results`] found.
#[derive(Debug, Default)]
pub struct ResultsFile {
    pub records: Vec<Record>,
    /// The 1-based line number of each record, in step with `records`.
    pub lines: Vec<usize>,
    /// Complete lines that are not records: (1-based line number, reason).
    pub bad_lines: Vec<(usize, String)>,
    /// Byte length of the complete lines; anything after it has no final newline.
    pub complete_len: u64,
    /// True when the bytes after `complete_len` are a record of ours cut off by a crash (ignored).
    pub partial_tail: bool,
    /// Set when the bytes after `complete_len` are something else: why they cannot be ours.
    pub foreign_tail: Option<String>,
}

/// Reads a results file without changing it. A missing file reads as empty.
pub fn read_results(path: &Path) -> Result<ResultsFile> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ResultsFile::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(parse_results(&bytes))
}

/// Parses the bytes of a results file.
pub fn parse_results(bytes: &[u8]) -> ResultsFile {
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let tail = &bytes[complete_len..];
    let mut out = ResultsFile { complete_len: complete_len as u64, ..Default::default() };
    if !tail.is_empty() {
        if serde_json::from_slice::<serde_json::Value>(tail).is_ok() {
            out.foreign_tail =
                Some("its last line is complete JSON without a final newline (not a write of ours cut short)".into());
        } else if tail.starts_with(RECORD_START) {
            out.partial_tail = true;
        } else {
            out.foreign_tail = Some("it does not end in a newline and its last line is not a results record".into());
        }
    }
    for (i, line) in bytes[..complete_len].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                out.records.push(r);
                out.lines.push(i + 1);
            }
            Err(e) => out.bad_lines.push((i + 1, e.to_string())),
        }
    }
    out
}

/// The writer of one results file, holding its lock until dropped.
pub struct ResultsStore {
    file: File,
    path: PathBuf,
    /// What the file held when it was opened (after cutting a crash's partial line).
    pub existing: ResultsFile,
    /// The file did not exist before: remove it again unless a record was written or the run finished
    /// (a shard with no items still leaves its, empty, file for the merge).
    created: bool,
    keep: bool,
}

impl ResultsStore {
    /// Opens (creating) the results file at `path` for appending: checks it is a regular file, takes its
    /// exclusive lock (refusing when another process holds it), reads it, refuses a file that is not ours,
    /// and cuts a crash's partial last line away.
    pub fn open(path: &Path) -> Result<Self> {
        crate::output::check_output_kind(path, "--out")?;
        let existed = path.exists();
        // O_NONBLOCK: a pipe swapped in after the check must fail below, not block the open.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::InvalidArgument(format!(
                "results file {}: is not a regular file ({}); results are read back to resume, so give a file path",
                path.display(),
                crate::output::describe_file_type(&meta.file_type())
            )));
        }
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::InvalidArgument(format!(
                    "results file {} is in use by another process (it holds the file's lock); wait for that eval to \
                     finish or give another --out",
                    path.display()
                ))
            } else {
                Error::io(path, e)
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        let existing = parse_results(&bytes);
        let not_ours = |why: String| {
            Error::InvalidArgument(format!(
                "results file {}: {why}; it is not a latentmas results file (or was edited), so it is left as it is; \
                 give another --out",
                path.display()
            ))
        };
        if let Some((line, reason)) = existing.bad_lines.first() {
            return Err(not_ours(format!("line {line} is not a results record ({reason})")));
        }
        if let Some(why) = &existing.foreign_tail {
            return Err(not_ours(why.clone()));
        }
        if existing.partial_tail {
            tracing::warn!(
                "{}: cutting a partial last line (an interrupted write); that item runs again",
                path.display()
            );
            file.set_len(existing.complete_len).map_err(|e| Error::io(path, e))?;
        }
        Ok(ResultsStore { file, path: path.to_path_buf(), existing, created: !existed, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record as one line in one `write(2)`.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line =
            serde_json::to_vec(record).map_err(|e| Error::Json { path: self.path.clone(), message: e.to_string() })?;
        line.push(b'\n');
        // One write of the whole line: a crash leaves at most this line partial.
        self.keep = true;
        self.file.write_all(&line).map_err(|e| Error::io(&self.path, e))
    }

    /// The run finished: keep the file even when it holds no record.
    pub fn finish(&mut self) {
        self.keep = true;
    }
}

impl Drop for ResultsStore {
    fn drop(&mut self) {
        // A run that failed before its first record leaves no empty file behind (still under the lock).
        if self.created && !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
