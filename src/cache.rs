//! The project's cache directory (synthesized models, the imported reference prompt set, venvs of the tools).

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/latentmas`, else `~/.cache/latentmas`, else `latentmas` in the temporary directory.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("latentmas")
}
