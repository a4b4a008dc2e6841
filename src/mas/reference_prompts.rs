//! The reference's prompt set, imported from a local checkout of the authors' repository rather than shipped:
//! `latentmas prompts import DIR` runs that checkout's own `prompts.py` builders under python3 (the driver is
//! `import_prompts.py`, embedded here) and caches the exported set; `--prompts reference` loads it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mas::prompts::PromptSet;

/// The `--prompts` value that selects the imported reference set.
pub const REFERENCE: &str = "reference";

const DRIVER: &str = include_str!("import_prompts.py");

/// Building the prompts is pure string work; a module that takes longer than this is stuck.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the imported set lives: `<cache dir>/prompts/reference.json` (the cache dir of synthesized models).
pub fn cache_path() -> PathBuf {
    crate::cache::cache_dir().join("prompts").join("reference.json")
}

/// The command that creates the cached set, for error messages.
pub fn import_hint() -> String {
    "latentmas prompts import /path/to/LatentMAS (a checkout of github.com/Gen-Verse/LatentMAS, or any directory holding its prompts.py)".into()
}

/// Loads the imported reference set, or says how to import it.
pub fn load() -> Result<PromptSet> {
    resolve(Some(Path::new(REFERENCE)))
}

/// The file a `--prompts` value reads: none for the built-in set, the cached import for `reference` (an
/// error naming the import command when there is none), else the path given. What an eval's provenance
/// hashes, so that it is always the file the run loads.
pub fn source_file(arg: Option<&Path>) -> Result<Option<PathBuf>> {
    match arg {
        None => Ok(None),
        Some(p) if p == Path::new(REFERENCE) => {
            let path = cache_path();
            if !path.exists() {
                return Err(Error::Prompts(format!(
                    "--prompts reference: no imported reference prompt set at {}; import it once with: {}",
                    path.display(),
                    import_hint()
                )));
            }
            Ok(Some(path))
        }
        Some(p) => Ok(Some(p.to_path_buf())),
    }
}

/// The prompt set a `--prompts` value names: none → built-in, `reference` → the imported set, else a file.
pub fn resolve(arg: Option<&Path>) -> Result<PromptSet> {
    let Some(path) = source_file(arg)? else { return Ok(PromptSet::builtin()) };
    let mut set = PromptSet::from_file(&path)?;
    if arg == Some(Path::new(REFERENCE)) {
        set.source = REFERENCE.into();
    }
    Ok(set)
}

/// Finds `prompts.py` in `dir` (the directory itself, or one level of subdirectories, as in a checkout whose
/// code sits in a package folder); `dir` may also be the file.
pub fn find_prompts_py(dir: &Path) -> Result<PathBuf> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.is_dir() {
        return Err(Error::Prompts(format!("{}: no such directory", dir.display())));
    }
    let direct = dir.join("prompts.py");
    if direct.is_file() {
        return Ok(direct);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("prompts.py"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Prompts(format!(
            "{}: no prompts.py here or one level down; give the directory of a Gen-Verse/LatentMAS checkout",
            dir.display()
        ))),
        _ => Err(Error::Prompts(format!(
            "{}: several prompts.py files ({}); give the one to import",
            dir.display(),
            found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The commit of the checkout holding `file`, when it is a git work tree.
fn git_commit(file: &Path) -> Option<String> {
    let dir = file.parent()?;
    let out = Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).stderr(Stdio::null()).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && s.len() == 40).then_some(s)
}

/// Exports the prompt set of `prompts_py` with `python` and writes it to `out` (atomically). Returns the
/// loaded set. The written set must cover every method, topology, role and family the engine can ask for.
pub fn import(prompts_py: &Path, python: &Path, out: &Path) -> Result<PromptSet> {
    let prompts_py = prompts_py.canonicalize().map_err(|e| Error::io(prompts_py, e))?;
    let mut note = format!(
        "prompt set exported by `latentmas prompts import` from {} by calling its prompt builders",
        prompts_py.display()
    );
    if let Some(c) = git_commit(&prompts_py) {
        note.push_str(&format!(" (git commit {c})"));
    }
    note.push_str("; placeholders {question} and {ctx}; the agents' system message is _system");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = out.with_extension("importing");
    let driver = tmp.with_extension("driver.py");
    std::fs::write(&driver, DRIVER).map_err(|e| Error::io(&driver, e))?;
    let result = run_driver(python, &driver, &prompts_py, &tmp, &note);
    let _ = std::fs::remove_file(&driver);
    let finish = || -> Result<PromptSet> {
        result?;
        let text = std::fs::read_to_string(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let set = PromptSet::from_json(&text, &prompts_py.display().to_string())?;
        let missing = set.missing();
        if !missing.is_empty() {
            return Err(Error::Prompts(format!(
                "{}: the exported set lacks prompts the engine needs: {}",
                prompts_py.display(),
                missing.join(", ")
            )));
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(set)
    };
    let r = finish();
    let _ = std::fs::remove_file(&tmp);
    r
}

fn run_driver(python: &Path, driver: &Path, prompts_py: &Path, out: &Path, note: &str) -> Result<()> {
    let mut child = Command::new(python)
        .arg("-B")
        .arg(driver)
        .arg(prompts_py)
        .arg(out)
        .arg(note)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Prompts(format!("cannot run {}: {e} (give an interpreter with --python)", python.display()))
        })?;
    // Drain stderr on a thread so a chatty module cannot block on a full pipe while we wait.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| Error::Prompts(format!("waiting for {}: {e}", python.display())))? {
            Some(s) => break s,
            None if start.elapsed() > IMPORT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Prompts(format!(
                    "{}: building the prompts took over {} s; stopped",
                    prompts_py.display(),
                    IMPORT_TIMEOUT.as_secs()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        let tail: String =
            err.trim().lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(Error::Prompts(format!("importing {} failed ({status}):\n{tail}", prompts_py.display())));
    }
    Ok(())
}
