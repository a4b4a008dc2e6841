//! Every task's fixture loads, and a fake solver's canned answers (right and wrong) are scored as the
//! reference scores them, through the real runner and results file. Also: malformed data lines, and the
//! code-task templates against the reference's `_question/*` strings when ../shared is present
//! (reported as ignored, with the reason, otherwise).

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::trial;
use latentmas::Result;
use latentmas_cli::eval::{self, EvalOptions, ExecConfig, Gold, Record, SolveOutput, Solver, Task};

fn fixture(task: Task) -> PathBuf {
    let name = match task {
        Task::Medqa => "medqa.json".to_string(),
        t => format!("{t}.jsonl"),
    };
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/eval").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentmas-eval-tasks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Answers each question with a fixed text.
struct Canned {
    answers: HashMap<String, String>,
}

impl Solver for Canned {
    fn solve_batch(&mut self, questions: &[String]) -> Result<Vec<SolveOutput>> {
        Ok(questions
            .iter()
            .map(|q| SolveOutput {
                text: self.answers.get(q).cloned().unwrap_or_default(),
                agents: serde_json::json!([{"role": "judger", "output_tokens": 7}]),
                output_tokens: 7,
                latent_steps: 3,
                seconds: 0.5,
            })
            .collect())
    }

    fn method_label(&self) -> String {
        "canned".to_string()
    }
}

fn py(code: &str) -> String {
    format!("Here is my solution.\n```python\n{code}\n```\nDone.")
}

/// Per task, in fixture order: (model output, expected correct?).
fn cases(task: Task) -> Vec<(String, bool)> {
    let s = |t: &str, ok| (t.to_string(), ok);
    match task {
        Task::Gsm8k => vec![
            s(r"3 * 4 = 12, so \boxed{12}", true),
            s(r"\boxed{1,000}", true), // gold `#### 1,000` reads as `1`, and so does the box
            s(r"\boxed{8}", false),
            s("It ends at -5 degrees.", true), // no box: the last number
        ],
        Task::Aime2024 => vec![s(r"\boxed{24}", true), s(r"\boxed{9.5}", false), s(r"\boxed{323}", true)],
        Task::Aime2025 => vec![s(r"\boxed{55}", true), s(r"\boxed{\frac{1}{2}}", false), s("so 666", true)],
        Task::Gpqa => vec![s(r"\boxed{B}", true), s(r"\boxed{\text{C}}", false), s(r"\boxed{A}", true)],
        Task::ArcEasy => vec![s(r"\boxed{A}", true), s(r"\boxed{C}", false), s(r"\boxed{e}", true)],
        Task::ArcChallenge => vec![s(r"\boxed{B}", true), s(r"\boxed{A}", true), s(r"\boxed{3}", false)],
        Task::Medqa => vec![s(r"\boxed{A}", true), s(r"\boxed{B}", false), s(r"\boxed{ d }", true)],
        Task::MbppPlus => vec![
            (py("def add_two(a, b):\n    return a + b"), true),
            (py("def is_even(n):\n    return n % 2 == 1"), false),
            (py("def square(x):\n    while True:\n        pass"), false), // hangs: killed at the timeout
            (py("import sys\ndef first_char(s):\n    return s[0]\nsys.exit(0)"), false), // exits: wrong, as in the reference
        ],
        Task::HumanEvalPlus => vec![
            (py("def double(x: int) -> int:\n    return 2 * x"), true),
            (py("def count_vowels(s):\n    return len(s)"), false),
            (py("def largest(xs):\n    return max(xs)\nexit(3)"), false),
            // `__main__` blocks do not run under the reference's exec().
            (py("def reverse(s):\n    return s[::-1]\n\nif __name__ == \"__main__\":\n    raise SystemExit(1)"), true),
        ],
    }
}

fn main() {
    harness::run(vec![
        trial!(every_task_loads_and_scores),
        trial!(code_failures_say_why),
        trial!(fixture_questions_and_golds),
        trial!(malformed_line_is_reported_with_its_line_number_and_skipped),
        trial!(unusable_file_is_an_error),
        trial!(code_templates_match_reference_prompts, needs reference_prompts),
    ]);
}

/// The reference's exported prompts (their `_question/*` templates).
fn reference_prompts() -> std::result::Result<(), String> {
    harness::shared("reference/reference_prompts.json").map(drop)
}

fn every_task_loads_and_scores() {
    let dir = scratch("all");
    for task in Task::ALL {
        let ds = eval::load(task, &fixture(task)).expect("fixture loads");
        assert!(ds.warnings.is_empty(), "{task}: {:?}", ds.warnings);
        let cases = cases(task);
        assert_eq!(ds.items.len(), cases.len(), "{task}");
        let answers = ds.items.iter().zip(&cases).map(|(it, (text, _))| (it.question.clone(), text.clone())).collect();
        let mut solver = Canned { answers };
        let out = dir.join(format!("{task}.jsonl"));
        let opts = EvalOptions {
            batch_size: 2,
            progress: false,
            exec: ExecConfig { timeout: Duration::from_secs(2), ..ExecConfig::default() },
            ..EvalOptions::new(task, &out)
        };
        let run = eval::run_eval(&mut solver, &ds.items, &opts).expect("eval runs");
        let lines = std::fs::read_to_string(&out).expect("results written");
        let records: Vec<Record> = lines.lines().map(|l| serde_json::from_str(l).expect("record line")).collect();
        assert_eq!(records.len(), cases.len(), "{task}");
        for ((rec, (text, want)), item) in records.iter().zip(&cases).zip(&ds.items) {
            assert_eq!(rec.correct, *want, "{task} {}: {text:?} → {:?} ({:?})", rec.id, rec.prediction, rec.detail);
            assert_eq!((rec.task, rec.method.as_str(), rec.id.as_str()), (task, "canned", item.id.as_str()));
            assert_eq!((rec.output_tokens, rec.latent_steps, rec.output.as_str()), (7, 3, text.as_str()));
            assert_eq!(rec.agents[0]["role"], "judger");
        }
        let n_right = cases.iter().filter(|c| c.1).count();
        assert_eq!((run.summary.n, run.summary.correct, run.ran, run.resumed), (cases.len(), n_right, cases.len(), 0));
        assert_eq!(run.summary.mean_output_tokens, 7.0);
        println!("{}", run.summary);
    }
}

fn code_failures_say_why() {
    let dir = scratch("why");
    let ds = eval::load(Task::MbppPlus, &fixture(Task::MbppPlus)).expect("loads");
    let answers = ds.items.iter().zip(cases(Task::MbppPlus)).map(|(it, (t, _))| (it.question.clone(), t)).collect();
    let opts = EvalOptions {
        progress: false,
        exec: ExecConfig { timeout: Duration::from_secs(1), ..ExecConfig::default() },
        ..EvalOptions::new(Task::MbppPlus, dir.join("r.jsonl"))
    };
    let start = std::time::Instant::now();
    eval::run_eval(&mut Canned { answers }, &ds.items, &opts).expect("runs");
    assert!(start.elapsed() < Duration::from_secs(8), "the hang was not cut at the timeout");
    let text = std::fs::read_to_string(dir.join("r.jsonl")).expect("results");
    let details: Vec<Option<String>> =
        text.lines().map(|l| serde_json::from_str::<Record>(l).expect("record").detail).collect();
    assert_eq!(details[0], None);
    assert!(details[1].as_deref().is_some_and(|d| d.contains("AssertionError")), "{details:?}");
    assert!(details[2].as_deref().is_some_and(|d| d.starts_with("timed out")), "{details:?}");
    assert!(details[3].as_deref().is_some_and(|d| d.contains("SystemExit")), "{details:?}");
}

fn fixture_questions_and_golds() {
    let load = |t| eval::load(t, &fixture(t)).expect("loads").items;
    let arc = load(Task::ArcChallenge);
    assert_eq!(arc[1].id, "Fixture_C2");
    assert_eq!(
        arc[1].question,
        "A student pushes a cart. Which quantity tells how hard she pushes?\na: force\nb: mass\nc: volume\nd: density"
    );
    assert_eq!(arc[1].gold, Gold::Label("a".into()));
    let aime = load(Task::Aime2024);
    assert_eq!((aime[0].id.as_str(), &aime[0].gold), ("60", &Gold::Integer("024".into())));
    assert_eq!(aime[0].question, "Find the remainder when 2^10 is divided by 1000.");
    let gsm = load(Task::Gsm8k);
    assert_eq!(gsm[1].gold, Gold::Number("1".into()));
    assert_eq!(gsm[1].question, "A stall sells 250 lemons on each of 4 days. How many lemons does it sell in total?");
    let med = load(Task::Medqa);
    // medqa's `idx` repeats, so ids are positions; the question is `query` untouched (trailing newline kept).
    assert_eq!(med.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
    assert!(med[0].question.ends_with("D. Eye exam\n"));
    assert_eq!(med[2].gold, Gold::Label("d".into()));
    let mb = load(Task::MbppPlus);
    assert_eq!(mb[0].id, "901");
    assert!(mb[2].question.ends_with("assert math.isclose(square(1.5), 2.25)\n"));
}

fn malformed_line_is_reported_with_its_line_number_and_skipped() {
    let dir = scratch("bad");
    let path = dir.join("gsm8k.jsonl");
    let good = std::fs::read_to_string(fixture(Task::Gsm8k)).expect("fixture");
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(2, "{\"question\": \"broken\", \"answer\": ");
    lines.insert(4, "{\"question\": \"no gold\", \"answer\": \"none\"}");
    std::fs::write(&path, lines.join("\n")).expect("write");
    let ds = eval::load(Task::Gsm8k, &path).expect("still loads");
    assert_eq!(ds.items.len(), 4);
    let w: Vec<String> = ds.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with(&format!("{}:3: invalid JSON", path.display())), "{}", w[0]);
    assert_eq!(w[1], format!("{}:5: field `answer` has no `#### NUMBER`", path.display()));
    // The run goes on with the good items.
    let answers = ds.items.iter().map(|it| (it.question.clone(), r"\boxed{7}".to_string())).collect();
    let opts = EvalOptions { progress: false, ..EvalOptions::new(Task::Gsm8k, dir.join("r.jsonl")) };
    let run = eval::run_eval(&mut Canned { answers }, &ds.items, &opts).expect("runs");
    assert_eq!((run.summary.n, run.summary.correct), (4, 1));
}

fn unusable_file_is_an_error() {
    let dir = scratch("unusable");
    let path = dir.join("x.jsonl");
    std::fs::write(&path, "{\"problem\": \"p\"}\n{\"problem\": \"q\"}\n").expect("write");
    let err = eval::load(Task::Aime2025, &path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("no usable aime2025 items") && err.contains(":1: missing field `answer`"), "{err}");
    assert!(eval::load(Task::Aime2025, &dir.join("absent.jsonl")).is_err());
}

/// The code templates match the reference's `_question/*` strings, filled as the reference fills them.
fn code_templates_match_reference_prompts() {
    let path = harness::shared("reference/reference_prompts.json").unwrap();
    let text = std::fs::read_to_string(&path).expect("read the reference prompts");
    let prompts: serde_json::Value = serde_json::from_str(&text).expect("prompts JSON");
    let template = |k: &str| prompts[k].as_str().expect("template").to_string();
    let raw = |t: Task| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(fixture(t)).expect("fixture");
        text.lines().map(|l| serde_json::from_str(l).expect("json")).collect()
    };
    for (rec, item) in
        raw(Task::MbppPlus).iter().zip(eval::load(Task::MbppPlus, &fixture(Task::MbppPlus)).expect("l").items)
    {
        let mut want = template("_question/mbppplus").replace("{prompt}", rec["prompt"].as_str().expect("p"));
        for i in 0..3 {
            want = want.replace(&format!("{{test_list[{i}]}}"), rec["test_list"][i].as_str().expect("t"));
        }
        assert_eq!(item.question, want);
    }
    for (rec, item) in raw(Task::HumanEvalPlus)
        .iter()
        .zip(eval::load(Task::HumanEvalPlus, &fixture(Task::HumanEvalPlus)).expect("l").items)
    {
        let want = template("_question/humanevalplus").replace("{prompt}", rec["prompt"].as_str().expect("p"));
        assert_eq!(item.question, want);
    }
}
