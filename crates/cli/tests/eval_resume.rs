//! Interrupted runs resume without repeating or losing items; results files are shared safely between
//! methods; `--limit`; and `latentmas report` over the files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use latentmas::{Error, Result};
use latentmas_cli::eval::{self, EvalOptions, Item, Record, SolveOutput, Solver, Task};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentmas-eval-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Ten gsm8k items "What is i + 1?" with gold i + 1.
fn items(dir: &Path) -> Vec<Item> {
    let path = dir.join("gsm8k.jsonl");
    let text: String = (0..10)
        .map(|i| format!("{{\"question\": \"Item {i}: what is {i} + 1?\", \"answer\": \"#### {}\"}}\n", i + 1))
        .collect();
    std::fs::write(&path, text).expect("write data");
    eval::load(Task::Gsm8k, &path).expect("loads").items
}

/// Answers item i right when i is even; fails once `fail_after` questions would be exceeded.
struct Arith {
    label: &'static str,
    asked: Vec<String>,
    fail_after: Option<usize>,
}

impl Arith {
    fn new(label: &'static str) -> Self {
        Arith { label, asked: Vec::new(), fail_after: None }
    }
}

impl Solver for Arith {
    fn solve_batch(&mut self, questions: &[String]) -> Result<Vec<SolveOutput>> {
        if self.fail_after.is_some_and(|k| self.asked.len() + questions.len() > k) {
            return Err(Error::Other("simulated crash".into()));
        }
        self.asked.extend(questions.iter().cloned());
        Ok(questions
            .iter()
            .map(|q| {
                let i: u64 = q.split([' ', ':']).nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                let answer = if i.is_multiple_of(2) { i + 1 } else { i + 2 };
                SolveOutput {
                    text: format!("so \\boxed{{{answer}}}"),
                    agents: serde_json::json!([]),
                    output_tokens: 10 * (i + 1),
                    latent_steps: 0,
                    seconds: 0.25,
                }
            })
            .collect())
    }

    fn method_label(&self) -> String {
        self.label.to_string()
    }
}

fn opts(out: &Path, batch: usize) -> EvalOptions {
    EvalOptions { batch_size: batch, progress: false, ..EvalOptions::new(Task::Gsm8k, out) }
}

fn records(out: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(out).expect("results");
    assert!(text.is_empty() || text.ends_with('\n'), "results file must end with a newline");
    text.lines().map(|l| serde_json::from_str(l).expect("every line is a record")).collect()
}

fn assert_complete(out: &Path, method: &str, items: &[Item]) {
    let ids: Vec<String> = records(out).into_iter().filter(|r| r.method == method).map(|r| r.id).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate records: {ids:?}");
    let want: HashSet<&String> = items.iter().map(|i| &i.id).collect();
    assert_eq!(unique, want);
}

#[test]
fn interrupted_run_resumes_without_repeats_or_losses() {
    for batch in [1, 3] {
        let dir = scratch(&format!("interrupt{batch}"));
        let items = items(&dir);
        let out = dir.join("results.jsonl");
        let mut crashing = Arith { fail_after: Some(5), ..Arith::new("m") };
        let err = eval::run_eval(&mut crashing, &items, &opts(&out, batch)).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("simulated crash"));
        let kept = crashing.asked.len(); // batch 1: 5 items; batch 3: one batch of 3
        assert_eq!(records(&out).len(), kept);

        let mut solver = Arith::new("m");
        let run = eval::run_eval(&mut solver, &items, &opts(&out, batch)).expect("resumes");
        assert_eq!((run.resumed, run.ran), (kept, 10 - kept));
        let asked: HashSet<&String> = solver.asked.iter().collect();
        assert!(crashing.asked.iter().all(|q| !asked.contains(q)), "a finished item was asked again");
        assert_complete(&out, "m", &items);
        assert_eq!((run.summary.n, run.summary.correct), (10, 5));
        assert_eq!(run.summary.mean_output_tokens, 55.0);

        // A third run has nothing to do.
        let mut idle = Arith::new("m");
        let run = eval::run_eval(&mut idle, &items, &opts(&out, batch)).expect("runs");
        assert!(idle.asked.is_empty());
        assert_eq!((run.resumed, run.ran, run.summary.n), (10, 0, 10));
    }
}

#[test]
fn partial_last_line_is_rewritten() {
    let dir = scratch("partial");
    let items = items(&dir);
    let out = dir.join("results.jsonl");
    eval::run_eval(&mut Arith::new("m"), &items, &opts(&out, 4)).expect("runs");
    // Simulate a crash in the middle of writing the last line.
    let text = std::fs::read_to_string(&out).expect("read");
    let cut = text.len() - 25;
    std::fs::write(&out, &text[..cut]).expect("truncate");
    let mut solver = Arith::new("m");
    let run = eval::run_eval(&mut solver, &items, &opts(&out, 4)).expect("resumes");
    assert_eq!((run.resumed, run.ran, solver.asked.len()), (9, 1, 1));
    assert_eq!(std::fs::read_to_string(&out).expect("read"), text, "file must be rewritten exactly");
}

#[test]
fn methods_share_a_file_and_limit_selects_a_prefix() {
    let dir = scratch("share");
    let items = items(&dir);
    let out = dir.join("results.jsonl");
    let limited = |n| EvalOptions { limit: Some(n), ..opts(&out, 2) };
    let mut a = Arith::new("a");
    let run = eval::run_eval(&mut a, &items, &limited(4)).expect("runs");
    assert_eq!((run.summary.n, a.asked.len()), (4, 4));
    let mut a = Arith::new("a");
    let run = eval::run_eval(&mut a, &items, &limited(6)).expect("runs");
    assert_eq!((run.resumed, run.ran, run.summary.n), (4, 2, 6));
    assert_eq!(a.asked, ["Item 4: what is 4 + 1?", "Item 5: what is 5 + 1?"]);
    // Another method in the same file starts from scratch and leaves a's records alone.
    let mut b = Arith::new("b");
    let run = eval::run_eval(&mut b, &items, &opts(&out, 5)).expect("runs");
    assert_eq!((run.resumed, run.ran), (0, 10));
    assert_eq!(records(&out).len(), 16);
    assert_complete(&out, "b", &items);
}

#[test]
fn foreign_file_and_bad_solver_are_errors() {
    let dir = scratch("foreign");
    let items = items(&dir);
    let out = dir.join("notes.txt");
    std::fs::write(&out, "my notes\n").expect("write");
    let err = eval::run_eval(&mut Arith::new("m"), &items, &opts(&out, 1)).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("line 1 is not a results record")), "{err:?}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "my notes\n", "file must be left alone");

    struct Short;
    impl Solver for Short {
        fn solve_batch(&mut self, _: &[String]) -> Result<Vec<SolveOutput>> {
            Ok(Vec::new())
        }
        fn method_label(&self) -> String {
            "short".into()
        }
    }
    let err = eval::run_eval(&mut Short, &items, &opts(&dir.join("r.jsonl"), 2)).err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("solver short returned 0 outputs for 2 questions"));
    let zero = EvalOptions { batch_size: 0, ..opts(&dir.join("r.jsonl"), 1) };
    assert!(eval::run_eval(&mut Short, &items, &zero).is_err());
    let twice = [items[0].clone(), items[0].clone()];
    let err = eval::run_eval(&mut Short, &twice, &opts(&dir.join("r.jsonl"), 1)).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("appears twice")), "{err:?}");
}

#[test]
fn report_tables_and_chart() {
    let dir = scratch("report");
    let items = items(&dir);
    let one = dir.join("results1.jsonl");
    let two = dir.join("results2.jsonl");
    eval::run_eval(&mut Arith::new("single"), &items, &opts(&one, 5)).expect("runs");
    eval::run_eval(&mut Arith::new("latent_mas & co"), &items, &EvalOptions { limit: Some(4), ..opts(&two, 2) })
        .expect("runs");
    // A partial line in the second file is skipped with a warning.
    let mut f = std::fs::read_to_string(&two).expect("read");
    f.push_str("{\"id\": \"cut");
    std::fs::write(&two, &f).expect("write");

    let report = eval::build_report(&[one.clone(), two.clone()]).expect("report");
    let methods: Vec<(&str, usize, usize)> =
        report.summaries.iter().map(|s| (s.method.as_str(), s.n, s.correct)).collect();
    assert_eq!(methods, [("single", 10, 5), ("latent_mas & co", 4, 2)]);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("partial last line"));
    let table = report.to_string();
    println!("{table}");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "header, separator and one row per method:\n{table}");
    assert!(rows[2].starts_with("| gsm8k ") && rows[2].contains("| single "), "{table}");
    assert!(rows[3].contains("| latent_mas & co ") && rows[3].contains(" 50.0% "), "{table}");

    // An overlapping copy of records (or the same file twice) is refused, naming both places.
    let dup: String = std::fs::read_to_string(&one).expect("read").lines().take(2).map(|l| format!("{l}\n")).collect();
    let three = dir.join("results3.jsonl");
    std::fs::write(&three, dup).expect("write");
    let err = eval::build_report(&[one.clone(), three.clone()]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("recorded twice") && err.contains("results1.jsonl:1") && err.contains("results3.jsonl:1"),
        "{err}"
    );
    assert!(eval::build_report(&[one.clone(), one.clone()]).is_err(), "the same file twice");

    let svg_path = dir.join("chart.svg");
    report.write_svg(&svg_path).expect("svg written");
    let svg = std::fs::read_to_string(&svg_path).expect("svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("latent_mas &amp; co") && svg.contains(">single<"));
    assert!(svg.contains("mean output tokens") && svg.contains("seconds per item"));
    assert_eq!(svg.matches("<circle").count(), 4, "two methods × two panels");
    let err = eval::build_report(&[dir.join("absent.jsonl")]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("absent.jsonl does not exist"), "{err}");
}

fn made_by(model: &str) -> eval::Provenance {
    let mut p = eval::Provenance::default();
    p.set("model", model).set("device", "cpu").set("data", "sha256:0123");
    p
}

#[test]
fn resume_reuses_only_records_made_the_same_way() {
    let dir = scratch("provenance");
    let items = items(&dir);
    let out = dir.join("results.jsonl");
    let with = |model: &str| EvalOptions { provenance: made_by(model), ..opts(&out, 2) };
    eval::run_eval(&mut Arith::new("m"), &items, &EvalOptions { limit: Some(4), ..with("A") }).expect("runs");
    assert!(
        records(&out).iter().all(|r| r.provenance.as_ref() == Some(&made_by("A"))),
        "every record says what made it"
    );
    let before = std::fs::read(&out).expect("read");

    // Another model into the same file, same task and method: refused, naming the difference; file untouched.
    let mut other = Arith::new("m");
    let err = eval::run_eval(&mut other, &items, &with("B")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cannot resume") && err.contains("model: A vs B") && err.contains("results.jsonl:1"), "{err}");
    assert!(other.asked.is_empty());
    assert_eq!(std::fs::read(&out).expect("read"), before);

    // The same setup resumes; another method may share the file with any setup.
    let run = eval::run_eval(&mut Arith::new("m"), &items, &with("A")).expect("resumes");
    assert_eq!((run.resumed, run.ran), (4, 6));
    let run = eval::run_eval(&mut Arith::new("n"), &items, &with("B")).expect("another method");
    assert_eq!((run.resumed, run.ran), (0, 10));

    // A record without provenance (an older file) is never silently reused.
    let old = dir.join("old.jsonl");
    let line = std::fs::read_to_string(&out).expect("read").lines().next().map(str::to_string).unwrap_or_default();
    let mut rec: Record = serde_json::from_str(&line).expect("record");
    rec.provenance = None;
    std::fs::write(&old, serde_json::to_string(&rec).expect("json") + "\n").expect("write");
    let err = eval::run_eval(&mut Arith::new("m"), &items, &EvalOptions { out: old, ..with("A") }).err();
    assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("records no provenance"));
}

#[test]
fn a_second_writer_is_refused_not_interleaved() {
    let dir = scratch("lock");
    let items = items(&dir);
    let out = dir.join("results.jsonl");
    let held = eval::ResultsStore::open(&out).expect("first writer");
    let mut second = Arith::new("m");
    let err = eval::run_eval(&mut second, &items, &opts(&out, 1)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(second.asked.is_empty());
    drop(held);
    let run = eval::run_eval(&mut Arith::new("m"), &items, &opts(&out, 1)).expect("lock released");
    assert_eq!(run.ran, 10);
}

#[test]
fn files_that_are_not_ours_are_never_cut() {
    let dir = scratch("notours");
    let items = items(&dir);
    // A record of another task that lost its final newline, a json.dump document, plain text.
    let other_task =
        "{\"id\":\"7\",\"task\":\"gpqa\",\"method\":\"x\",\"prediction\":null,\"gold\":\"A\",\"correct\":false,\
                      \"output_tokens\":1,\"latent_steps\":0,\"seconds\":0.1,\"agents\":[],\"output\":\"\"}";
    for (name, text, why) in [
        ("record.jsonl", other_task.to_string(), "complete JSON without a final newline"),
        ("dump.json", "{\"accuracy\": 0.5}".to_string(), "complete JSON without a final newline"),
        ("notes.txt", "line one\nno newline".to_string(), "not a results record"),
    ] {
        let out = dir.join(name);
        std::fs::write(&out, &text).expect("write");
        let err = eval::run_eval(&mut Arith::new("m"), &items, &opts(&out, 1)).err().map(|e| e.to_string());
        assert!(err.as_deref().unwrap_or_default().contains(why), "{name}: {err:?}");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), text, "{name} must be left alone");
    }
}

#[test]
fn shards_cover_the_items_once_and_merge_to_the_whole() {
    let dir = scratch("shards");
    let items = items(&dir);
    let whole = dir.join("whole.jsonl");
    eval::run_eval(&mut Arith::new("m"), &items, &EvalOptions { provenance: made_by("A"), ..opts(&whole, 3) })
        .expect("runs");
    let mut files = Vec::new();
    for i in 0..4 {
        let out = dir.join(format!("shard-{i}-of-4.jsonl"));
        let shard = Some(eval::Shard { index: i, count: 4 });
        let o = EvalOptions { shard, provenance: made_by("A"), ..opts(&out, 2) };
        let mut s = Arith::new("m");
        let run = eval::run_eval(&mut s, &items, &o).expect("shard runs");
        assert_eq!(run.ran, if i < 2 { 3 } else { 2 });
        // Resumable per shard file.
        let again = eval::run_eval(&mut Arith::new("m"), &items, &o).expect("reruns");
        assert_eq!((again.ran, again.resumed), (0, run.ran));
        files.push(out);
    }
    // More shards than items: an empty shard still leaves its (empty) file, so a merge of all shards works.
    let empty = dir.join("shard-11-of-12.jsonl");
    let o =
        EvalOptions { shard: Some(eval::Shard { index: 11, count: 12 }), provenance: made_by("A"), ..opts(&empty, 2) };
    assert_eq!(eval::run_eval(&mut Arith::new("m"), &items, &o).expect("runs").ran, 0);
    assert_eq!(std::fs::read(&empty).ok(), Some(Vec::new()));
    let merged = eval::build_report(&files).expect("merges");
    let key = |r: &Record| (r.id.clone(), r.prediction.clone(), r.correct, r.output.clone(), r.provenance.clone());
    let mut got: Vec<_> = merged.records.iter().map(key).collect();
    let mut want: Vec<_> = records(&whole).iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!((merged.summaries[0].n, merged.summaries[0].correct), (10, 5));

    // A shard made differently refuses to merge.
    let odd = dir.join("odd.jsonl");
    let shard = Some(eval::Shard { index: 0, count: 4 });
    eval::run_eval(&mut Arith::new("m"), &items, &EvalOptions { shard, provenance: made_by("B"), ..opts(&odd, 2) })
        .expect("runs");
    let err = eval::build_report(&[files[1].clone(), odd]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("produced differently") && err.contains("model: A vs B"), "{err}");
}
