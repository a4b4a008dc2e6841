//! Files and streams the CLI writes: checked before any work, never seen half-written.
//!
//! Public operations:
//! - [`check_output_file`]: fail early when a path cannot receive a file (a directory, a missing or
//!   read-only parent, a pipe or device where a file is expected), naming the flag.
//! - [`write_atomic`]: write a whole file under a temporary name in the same directory, then rename it;
//!   the temporary file is removed on error and on SIGINT/SIGTERM ([`crate::interrupt`]).
//! - [`print_line`]: one line to stdout in one `write(2)`, so a kill between two writes cannot leave an
//!   unterminated line for a reader of the stream.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::interrupt::TempPath;
use latentmas::error::{Error, Result};

/// Test hook: milliseconds to wait between writing a temporary file and renaming it, so a test can
/// interrupt the process in that window. Unset in normal use.
pub const WRITE_DELAY_ENV: &str = "LATENTMAS_TEST_WRITE_DELAY_MS";

/// The directory a file at `path` lands in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temporary name next to `path`: hidden, unique per process and call.
fn temp_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.tmp-latentmas-{}-{n}", std::process::id()))
}

/// Checks that `path` can receive a regular file written by [`write_atomic`] or appended to: it is not a
/// directory, it is a regular file if it exists, and its directory exists and accepts new files (probed by
/// creating and removing a temporary file, which also catches read-only file systems and root's
/// permission-free view). `what` names the flag in messages (`--out`, `--trace`, ...).
pub fn check_output_file(path: &Path, what: &str) -> Result<()> {
    check_output_kind(path, what)?;
    let dir = parent_dir(path);
    let probe = TempPath::new(temp_name(path));
    std::fs::OpenOptions::new().write(true).create_new(true).open(probe.path()).map_err(|e| {
        Error::InvalidArgument(format!("{what} {}: cannot create files in {}: {e}", path.display(), dir.display()))
    })?;
    Ok(())
}

/// The part of [`check_output_file`] that creates nothing: `path` is not a directory, is a regular file if
/// it exists, and its directory exists.
pub fn check_output_kind(path: &Path, what: &str) -> Result<()> {
    let bad = |why: String| Error::InvalidArgument(format!("{what} {}: {why}", path.display()));
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument(format!("{what}: empty path")));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(bad("is a directory; give a file path".into())),
        Ok(m) if !m.is_file() => {
            return Err(bad(format!(
                "is not a regular file ({}); give a file path",
                describe_file_type(&m.file_type())
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    if path.file_name().is_none() {
        return Err(bad("names no file".into()));
    }
    let dir = parent_dir(path);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!("directory {} does not exist", dir.display())))
        }
        Err(e) => return Err(bad(format!("directory {}: {e}", dir.display()))),
    }
    Ok(())
}

/// Words for a file type in messages.
pub fn describe_file_type(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a pipe"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename: readers see the
/// old file or the whole new one, and nothing is left behind on error or interrupt. `what` names the flag
/// in messages.
pub fn write_atomic(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    check_output_file(path, what)?;
    let tmp = TempPath::new(temp_name(path));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .map_err(|e| Error::io(tmp.path(), e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
        f.sync_data().map_err(|e| Error::io(tmp.path(), e))?;
    }
    if let Some(ms) = std::env::var(WRITE_DELAY_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    std::fs::rename(tmp.path(), path).map_err(|e| Error::io(path, e))?;
    tmp.persist();
    Ok(())
}

/// Writes `line` and a newline to stdout in one `write(2)` (looping only if the kernel takes part of it),
/// after flushing whatever `print!` left buffered.
pub fn print_line(line: &str) -> std::io::Result<()> {
    use std::os::fd::FromRawFd;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut lock = std::io::stdout().lock();
    lock.flush()?;
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps this File from closing it,
    // and holding the stdout lock keeps other writers out while it is used.
    let mut raw = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    raw.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("latentmas-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp-latentmas"))
            .collect()
    }

    #[test]
    fn atomic_write_replaces_and_leaves_nothing() {
        let _cleanups = crate::interrupt::tests::CLEANUPS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = scratch("atomic");
        let f = dir.join("a.json");
        write_atomic(&f, b"one", "--x").expect("writes");
        write_atomic(&f, b"two", "--x").expect("replaces");
        assert_eq!(std::fs::read(&f).expect("read"), b"two");
        let err = write_atomic(&dir, b"x", "--trace").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("--trace") && err.contains("is a directory"), "{err}");
        let err = write_atomic(&dir.join("no/such/f"), b"x", "--plot").err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("does not exist"));
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn devices_and_pipes_are_not_files() {
        let err = check_output_file(Path::new("/dev/null"), "--out").err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("character device"));
    }
}
