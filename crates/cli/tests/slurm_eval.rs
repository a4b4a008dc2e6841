//! `latentmas eval --shard I/N` + `latentmas report` merge to exactly the records of the unsharded run: four
//! shards run one after another here, and four shards as a real Slurm job array (tools/slurm/submit_eval.sh,
//! which runs tools/slurm/eval.sbatch per array task and a merge job after them). The Slurm test is reported
//! as ignored, with the reason, where `sbatch` or a running cluster is absent (tools/slurm/single_node.sh start sets one up, as root).

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use harness::trial;
use latentmas_cli::eval::Record;

const BIN: &str = env!("CARGO_BIN_EXE_latentmas");
const SHARDS: usize = 4;
/// Items in the generated benchmark: not a multiple of the shard count, so shards differ in size.
const ITEMS: usize = 10;

fn scratch(name: &str) -> PathBuf {
    // Under the package directory, not /tmp: the Slurm jobs must see it (one node here, a shared file
    // system on a real cluster).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("slurm-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A gsm8k file of `ITEMS` small sums.
fn dataset(dir: &Path) -> PathBuf {
    let path = dir.join("sums.jsonl");
    let text: String = (0..ITEMS)
        .map(|i| format!("{{\"question\": \"What is {i} + {}?\", \"answer\": \"#### {}\"}}\n", 2 * i, 3 * i))
        .collect();
    std::fs::write(&path, text).expect("write data");
    path
}

/// The eval flags of this test, without `--out` / `--shard`.
fn eval_flags(data: &Path) -> Vec<String> {
    [
        "--model",
        "tests/data/tiny-tied",
        "--task",
        "gsm8k",
        "--data",
        &data.display().to_string(),
        "--method",
        "latent",
        "--latent-steps",
        "2",
        "--greedy",
        "--max-new-tokens",
        "6",
        "--batch",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn latentmas(args: &[String]) -> String {
    let out = Command::new(BIN).args(args).output().expect("spawn latentmas");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "latentmas {args:?} failed: {stderr}");
    stdout.into_owned()
}

fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).expect("a results record")).collect()
}

/// What a record says about its item (timings and per-agent accounting vary from run to run).
fn answer(r: &Record) -> String {
    let p = serde_json::to_string(&r.provenance).expect("json");
    format!(
        "{}|{}|{:?}|{}|{}|{}|{}|{:?}|{p}",
        r.id, r.task, r.prediction, r.gold, r.correct, r.output_tokens, r.latent_steps, r.output
    )
}

fn answers(recs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = recs.iter().map(answer).collect();
    v.sort();
    v
}

/// The unsharded run of the same eval, in `dir/whole.jsonl`.
fn unsharded(dir: &Path, data: &Path) -> Vec<Record> {
    let whole = dir.join("whole.jsonl");
    let mut args = vec!["eval".to_string()];
    args.extend(eval_flags(data));
    args.extend(["--out".to_string(), whole.display().to_string()]);
    let t = Instant::now();
    latentmas(&args);
    println!("unsharded: {ITEMS} items in {:.1} s", t.elapsed().as_secs_f64());
    let recs = records(&whole);
    assert_eq!(recs.len(), ITEMS);
    recs
}

fn shard_files(dir: &Path) -> Vec<String> {
    (0..SHARDS).map(|i| dir.join(format!("shard-{i}-of-{SHARDS}.jsonl")).display().to_string()).collect()
}

/// `report --merge` of the shard files must equal the unsharded records, item for item.
fn check_merge(dir: &Path, whole: &[Record]) {
    let merged = dir.join("merged.jsonl");
    let mut args = vec!["report".to_string()];
    args.extend(shard_files(dir));
    args.extend(["--merge".to_string(), merged.display().to_string()]);
    let table = latentmas(&args);
    println!("{table}");
    let per_shard: Vec<usize> = shard_files(dir).iter().map(|f| records(Path::new(f)).len()).collect();
    println!("records per shard: {per_shard:?}; merged: {}", records(&merged).len());
    assert_eq!(per_shard, [3, 3, 2, 2]);
    assert_eq!(answers(&records(&merged)), answers(whole), "merged shards differ from the unsharded run");
    assert!(table.contains(&format!(" {ITEMS} ")), "the table counts every item once: {table}");
}

fn main() {
    harness::run(vec![
        trial!(local_shards_merge_to_the_unsharded_run),
        trial!(slurm_array_merges_to_the_unsharded_run, needs slurm),
    ]);
}

/// A Slurm cluster that answers, or why not.
fn slurm() -> Result<(), String> {
    if Command::new("sbatch").arg("--version").output().is_err() {
        return Err("no sbatch on PATH: Slurm is not installed; tools/slurm/single_node.sh start sets one up".into());
    }
    slurm_missing().map_or(Ok(()), Err)
}

fn local_shards_merge_to_the_unsharded_run() {
    let dir = scratch("local");
    let data = dataset(&dir);
    let whole = unsharded(&dir, &data);
    let t = Instant::now();
    for (i, file) in shard_files(&dir).iter().enumerate() {
        let mut args = vec!["eval".to_string()];
        args.extend(eval_flags(&data));
        args.extend(["--shard".to_string(), format!("{i}/{SHARDS}"), "--out".to_string(), file.clone()]);
        let out = latentmas(&args);
        assert!(out.contains(&format!("shard {i}/{SHARDS}")), "{out}");
        // Rerunning a shard resumes it: nothing to do.
        let again = latentmas(&args);
        assert!(again.contains("0 item(s) run now"), "{again}");
    }
    println!("4 local shards (each run twice): {:.1} s", t.elapsed().as_secs_f64());
    check_merge(&dir, &whole);
    std::fs::remove_dir_all(&dir).ok();
}

/// Why Slurm cannot be used here, or `None` when a cluster answers.
fn slurm_missing() -> Option<String> {
    let ok = |cmd: &str, args: &[&str]| Command::new(cmd).args(args).output().ok().filter(|o| o.status.success());
    ok("sbatch", &["--version"])?;
    let Some(info) = ok("sinfo", &["-h", "-o", "%T"]) else {
        return Some("sinfo fails: no running slurmctld (tools/slurm/single_node.sh start)".into());
    };
    let states = String::from_utf8_lossy(&info.stdout).into_owned();
    if !states.lines().any(|s| ["idle", "mixed", "allocated"].iter().any(|ok| s.starts_with(ok))) {
        return Some(format!("no usable Slurm node (states: {})", states.trim()));
    }
    None
}

fn slurm_array_merges_to_the_unsharded_run() {
    let dir = scratch("array");
    let data = dataset(&dir);
    let whole = unsharded(&dir, &data);
    let out_dir = dir.join("array");
    let t = Instant::now();
    let mut submit = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/slurm/submit_eval.sh"));
    submit.env("LATENTMAS_BIN", BIN).args(["--wait", &SHARDS.to_string(), &out_dir.display().to_string(), "--"]);
    submit.args(eval_flags(&data));
    let out = submit.output().expect("run submit_eval.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "submit_eval.sh failed: {stdout}\n{stderr}");
    println!("{SHARDS}-task Slurm array + merge job, submit to report: {:.1} s", t.elapsed().as_secs_f64());
    println!("{stdout}");
    check_merge(&out_dir, &whole);
    std::fs::remove_dir_all(&dir).ok();
}
