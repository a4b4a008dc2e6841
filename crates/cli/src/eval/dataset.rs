//! Loading a benchmark file into scored-ready [`Item`]s.
//!
//! Public operations:
//! - [`load`]: read a file for a task → [`Dataset`] (items + warnings).
//! - [`parse`]: the same from bytes already in memory (the path only labels messages).
//! - [`Item`], [`LoadWarning`].
//!
//! Format is decided by content, not by extension: text whose first non-blank character is `[` is one
//! JSON array of records (e.g. `medqa.json`); anything else is JSONL, one record per line, blank lines
//! ignored. A UTF-8 byte-order mark is skipped.
//!
//! Bad input policy:
//! - JSONL: a line that is not valid JSON, or a record the task cannot use (missing field, gold that
//!   does not parse), is skipped and reported as a [`LoadWarning`] with the file and 1-based line number.
//!   The run goes on with the remaining items.
//! - A JSON array that does not parse is an error (with serde's line and column): there is no way to
//!   tell where one record ends. Unusable records inside a valid array are warnings, located by index.
//! - A file that cannot be read, or that yields no usable item at all (for example a field missing in
//!   every record), is an error that quotes the first problem.
//!
//! Ids: each record's `id` / `task_id` when every usable record has one and they are all distinct;
//! otherwise (one warning says why) the 0-based position of the record in the file, counting blank-free
//! records including unusable ones, so ids stay stable when a bad line is later fixed. medqa's `idx` is
//! not used: it repeats (300 items, 200 distinct values).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::question::build;
use super::score::Gold;
use super::task::Task;
use latentmas::error::{Error, Result};

/// One benchmark question, ready for a solver.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique within its dataset; the key for resuming.
    pub id: String,
    /// The formatted `{question}` string the agent prompts embed.
    pub question: String,
    pub gold: Gold,
}

/// A record that was skipped (or a note about ids), with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    pub path: PathBuf,
    /// 1-based line number (JSONL); `None` for array elements and file-wide notes.
    pub line: Option<usize>,
    /// 0-based record position (element index for arrays); `None` for file-wide notes.
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.index) {
            (Some(l), _) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            (None, Some(i)) => write!(f, "{}: record {i}: {}", self.path.display(), self.message),
            (None, None) => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A loaded file.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub task: Task,
    pub path: PathBuf,
    /// In file order.
    pub items: Vec<Item>,
    pub warnings: Vec<LoadWarning>,
}

/// Reads and parses `path` for `task`.
pub fn load(task: Task, path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(task, &bytes, path)
}

/// Parses dataset bytes; `path` is used in messages only.
pub fn parse(task: Task, bytes: &[u8], path: &Path) -> Result<Dataset> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let records = if is_array { array_records(bytes, path)? } else { jsonl_records(bytes) };
    let mut warnings = Vec::new();
    let mut built = Vec::new();
    for rec in records {
        let outcome = rec.value.and_then(|v| build(task, &v));
        match outcome {
            Ok(b) => built.push((rec.index, b)),
            Err(message) => {
                warnings.push(LoadWarning { path: path.to_path_buf(), line: rec.line, index: Some(rec.index), message })
            }
        }
    }
    if built.is_empty() {
        let first = warnings.first().map_or("the file holds no records".to_string(), |w| w.to_string());
        return Err(Error::Dataset(format!("{}: no usable {task} items; {first}", path.display())));
    }
    let items = assign_ids(built, path, &mut warnings);
    Ok(Dataset { task, path: path.to_path_buf(), items, warnings })
}

/// One record before task-specific checks.
struct RawRecord {
    index: usize,
    line: Option<usize>,
    value: std::result::Result<Value, String>,
}

/// Lines are split on bytes so that one line of bad UTF-8 costs one warning, not the file.
fn jsonl_records(bytes: &[u8]) -> Vec<RawRecord> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .map(|(index, (ln, l))| RawRecord {
            index,
            line: Some(ln + 1),
            value: std::str::from_utf8(l)
                .map_err(|e| format!("line is not valid UTF-8: {e}"))
                .and_then(|l| serde_json::from_str(l).map_err(|e| format!("invalid JSON: {e}"))),
        })
        .collect()
}

fn array_records(bytes: &[u8], path: &Path) -> Result<Vec<RawRecord>> {
    let values: Vec<Value> = serde_json::from_slice(bytes)
        .map_err(|e| Error::Json { path: path.to_path_buf(), message: format!("not a JSON array of records: {e}") })?;
    Ok(values.into_iter().enumerate().map(|(index, v)| RawRecord { index, line: None, value: Ok(v) }).collect())
}

fn assign_ids(built: Vec<(usize, super::question::Built)>, path: &Path, warnings: &mut Vec<LoadWarning>) -> Vec<Item> {
    let own: Option<Vec<&String>> = built.iter().map(|(_, b)| b.id.as_ref()).collect();
    let use_own = match own {
        Some(ids) => {
            let distinct = ids.iter().collect::<HashSet<_>>().len() == ids.len();
            if !distinct {
                warnings.push(LoadWarning {
                    path: path.to_path_buf(),
                    line: None,
                    index: None,
                    message: "record ids repeat; using record positions as ids".to_string(),
                });
            }
            distinct
        }
        None => false,
    };
    built
        .into_iter()
        .map(|(index, b)| Item {
            id: match (use_own, b.id) {
                (true, Some(id)) => id,
                _ => index.to_string(),
            },
            question: b.question,
            gold: b.gold,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GSM: &str = "{\"question\": \"q0\", \"answer\": \"#### 1\"}\n\n{not json\n{\"question\": \"q2\"}\n{\"question\": \" q3 \", \"answer\": \"x #### 3\"}\n";

    #[test]
    fn jsonl_skips_bad_lines_with_line_numbers() {
        let ds = parse(Task::Gsm8k, GSM.as_bytes(), Path::new("g.jsonl")).expect("loads");
        let ids: Vec<&str> = ds.items.iter().map(|i| i.id.as_str()).collect();
        // Positions count records (blank lines excluded), so the last usable one is record 3.
        assert_eq!(ids, ["0", "3"]);
        assert_eq!(ds.items[1].question, "q3");
        let w: Vec<String> = ds.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with("g.jsonl:3: invalid JSON"), "{}", w[0]);
        assert_eq!(w[1], "g.jsonl:4: missing field `answer`");
    }

    #[test]
    fn json_array_by_content() {
        let text = " [{\"question\": \"a\", \"answer\": \"B\"}, {\"question\": \"b\"}]";
        let ds = parse(Task::Gpqa, text.as_bytes(), Path::new("x.jsonl")).expect("loads");
        assert_eq!(ds.items.len(), 1);
        assert_eq!(ds.warnings[0].to_string(), "x.jsonl: record 1: missing field `answer`");
        assert!(parse(Task::Gpqa, b"[{\"question\": ", Path::new("x.json")).is_err());
    }

    #[test]
    fn nothing_usable_is_an_error() {
        let err = parse(Task::Gsm8k, b"{\"q\": 1}\n{\"q\": 2}\n", Path::new("f")).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("dataset: f: no usable gsm8k items; f:1: missing field `answer`"));
        assert!(parse(Task::Gsm8k, b"\n\n", Path::new("f")).is_err());
    }

    #[test]
    fn own_ids_used_only_when_unique_and_complete() {
        let rec = |id: &str| format!("{{\"id\": {id}, \"problem\": \"p\", \"answer\": \"1\"}}\n");
        let ds = parse(Task::Aime2024, (rec("60") + &rec("\"x\"")).as_bytes(), Path::new("f")).expect("loads");
        assert_eq!(ds.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["60", "x"]);
        let ds = parse(Task::Aime2024, (rec("7") + &rec("7")).as_bytes(), Path::new("f")).expect("loads");
        assert_eq!(ds.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["0", "1"]);
        assert_eq!(ds.warnings.len(), 1);
    }
}
