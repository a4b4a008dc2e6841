//! Gold answers and correctness, per task, as the reference scores them (`data.py` builds the gold,
//! `methods/*.py` compare).
//!
//! Public operations:
//! - [`Gold`]: what scoring needs: a number string, an integer, an option label, or a test program.
//! - [`gsm8k_gold`], [`aime_gold`], [`option_gold`], [`medqa_gold`]: gold from a dataset's answer field.
//! - [`predict`]: the normalised prediction of a model text for a task (what `latentmas extract` prints).
//! - [`score`]: prediction + correctness of a model text; code tasks run the program (see [`code_exec`]).
//! - [`py_int`]: an integer string the way Python's `int()` reads one, canonicalised for comparison.
//!
//! Rules (reference behaviour, quirks kept so numbers compare with published ones):
//! - gsm8k: gold = first `####\s*NUMBER` of the answer. The number stops at a comma, so the 14 gold
//!   answers written `2,125` become `2`; a model that boxes `2,125` extracts `2` too and is right, one
//!   that boxes `2125` is wrong. Correct iff prediction and gold are non-empty and equal as strings
//!   (`18.00` ≠ `18`).
//! - aime: correct iff both parse as integers and are equal (`025` = `25`, `+7` = `7`); anything with a
//!   fractional part, and no prediction at all, is wrong. Only ASCII digits are read as integers (Python
//!   would also read other Unicode digits; no AIME answer is written that way).
//! - arc / gpqa / medqa: string equality of option labels (`a`..`e`); arc's numeric labels 1–4 are
//!   mapped to a–d (both in the question text and in the gold), other labels are lowercased.
//!   medqa's gold is the FIRST option whose text contains the answer text (substring test, as in the
//!   reference), mapped to a–d by position.
//! - code: see [`code_exec`]; the prediction is the last python block.
//!
//! [`code_exec`]: super::code_exec

use std::sync::LazyLock;

use regex::Regex;

use super::code_exec::{self, ExecConfig, ExecOutcome};
use super::extract::{normalize, py_strip, NUMBER_PATTERN};
use super::task::Task;
use latentmas::error::Result;

// `[\s\x1c-\x1f]` is Python's `\s`, which also matches the four ASCII separators.
static GSM8K_GOLD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"####[\s\x1c-\x1f]*({NUMBER_PATTERN})")).expect("constant regex"));

/// What an item is scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gold {
    /// gsm8k: the normalised number after `####` (compared as a string).
    Number(String),
    /// aime: the normalised answer text; it parses as an integer (checked at load time).
    Integer(String),
    /// arc / gpqa / medqa: the option label, lowercase (`a`, `b`, …).
    Label(String),
    /// mbpp+ / humaneval+: the test program appended after the model's code.
    Tests(String),
}

impl Gold {
    /// The text written to the results file's `gold` field. Code tasks write `pass` (the expected
    /// outcome of the tests) instead of the test program, which can be tens of kilobytes.
    pub fn as_record(&self) -> &str {
        match self {
            Gold::Number(s) | Gold::Integer(s) | Gold::Label(s) => s,
            Gold::Tests(_) => "pass",
        }
    }
}

/// gsm8k gold from the `answer` field (`… #### 72`). `None` when there is no `#### NUMBER`.
pub fn gsm8k_gold(answer: &str) -> Option<Gold> {
    let caps = GSM8K_GOLD.captures(answer)?;
    Some(Gold::Number(normalize(caps.get(1)?.as_str())))
}

/// aime gold from the answer text (`"025"`, `"70"`). `None` when it is not an integer, because the
/// reference would then score every prediction wrong.
pub fn aime_gold(answer: &str) -> Option<Gold> {
    let g = normalize(answer);
    py_int(&g)?;
    Some(Gold::Integer(g))
}

/// An option label: arc's `1`–`4` become `a`–`d`, anything else is lowercased (the reference's `map_label`).
pub fn map_label(label: &str) -> String {
    let s = py_strip(label);
    match s {
        "1" => "a".to_string(),
        "2" => "b".to_string(),
        "3" => "c".to_string(),
        "4" => "d".to_string(),
        _ => s.to_lowercase(),
    }
}

/// arc / gpqa gold from an answer label. `None` when it is empty (the reference could never match it).
pub fn option_gold(label: &str) -> Option<Gold> {
    let g = normalize(&map_label(label));
    (!g.is_empty()).then_some(Gold::Label(g))
}

/// medqa gold: the first of the (at most four) options whose text contains `answer`, as a letter.
pub fn medqa_gold(answer: &str, options: &[&str]) -> Option<Gold> {
    let idx = options.iter().position(|op| op.contains(answer))?;
    let letter = ["a", "b", "c", "d"].get(idx)?;
    Some(Gold::Label((*letter).to_string()))
}

/// Python's `int(s)` for the strings extraction can produce, canonicalised (sign only when negative,
/// no leading zeros) so that equal integers compare equal as strings; `None` where `int()` would raise.
pub fn py_int(s: &str) -> Option<String> {
    let t = py_strip(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    // Python also accepts single underscores between digits.
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let trimmed = digits.replace('_', "");
    let trimmed = trimmed.trim_start_matches('0');
    Some(match (neg, trimmed.is_empty()) {
        (_, true) => "0".to_string(),
        (true, false) => format!("-{trimmed}"),
        (false, false) => trimmed.to_string(),
    })
}

/// The prediction of a model text: the last python block for code tasks, else the normalised answer.
pub fn predict(task: Task, text: &str) -> Option<String> {
    predict_answer(task.is_code(), text)
}

pub use latentmas::answer::predict_answer;

/// The outcome of scoring one model text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// What [`predict`] returns.
    pub prediction: Option<String>,
    pub correct: bool,
    /// Why a code answer failed (no block, exception text, timeout); `None` otherwise.
    pub detail: Option<String>,
}

/// Scores `text` against `gold`. Errors only when the code sandbox cannot run at all (python3 missing,
/// no temporary directory): a broken environment must not silently score every item wrong.
pub fn score(task: Task, gold: &Gold, text: &str, exec: &ExecConfig) -> Result<Scored> {
    let prediction = predict(task, text);
    let (correct, detail) = match gold {
        Gold::Tests(tests) => match &prediction {
            None => (false, Some("no ```python block in the output".to_string())),
            Some(code) => {
                // The reference runs `code + "\n" + gold`.
                let outcome = code_exec::run_python(&format!("{code}\n{tests}"), exec)?;
                (outcome.passed(), failure_detail(&outcome))
            }
        },
        Gold::Integer(g) => {
            let equal = prediction.as_deref().and_then(py_int).is_some_and(|p| Some(p) == py_int(g));
            (equal, None)
        }
        Gold::Number(g) | Gold::Label(g) => {
            let p = prediction.as_deref().unwrap_or("");
            (!p.is_empty() && !g.is_empty() && p == g, None)
        }
    };
    Ok(Scored { prediction, correct, detail })
}

fn failure_detail(outcome: &ExecOutcome) -> Option<String> {
    (!outcome.passed()).then(|| outcome.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_exec() -> ExecConfig {
        ExecConfig::default()
    }

    fn correct(task: Task, gold: &Gold, text: &str) -> bool {
        match score(task, gold, text, &no_exec()) {
            Ok(s) => s.correct,
            Err(e) => panic!("scoring failed: {e}"),
        }
    }

    #[test]
    fn gsm8k_gold_keeps_reference_comma_quirk() {
        let g = |s: &str| gsm8k_gold(s).map(|g| g.as_record().to_string());
        assert_eq!(g("step\n#### 72").as_deref(), Some("72"));
        assert_eq!(g("#### 2,125").as_deref(), Some("2"));
        assert_eq!(g("####-3").as_deref(), Some("-3"));
        assert_eq!(g("#### none\n#### 5").as_deref(), Some("5"));
        assert_eq!(g("no marker 5"), None);
    }

    /// (task, gold, model text, correct?)
    #[test]
    fn scoring_table() {
        let num = |s: &str| Gold::Number(s.into());
        let int = |s: &str| Gold::Integer(s.into());
        let lab = |s: &str| Gold::Label(s.into());
        let cases: Vec<(Task, Gold, &str, bool)> = vec![
            (Task::Gsm8k, num("18"), r"\boxed{18}", true),
            (Task::Gsm8k, num("18"), r"\boxed{18.00}", false),
            (Task::Gsm8k, num("1"), r"\boxed{1,000}", true), // gold `#### 1,000` → `1`
            (Task::Gsm8k, num("1"), r"\boxed{1000}", false),
            (Task::Gsm8k, num("-4"), r"\boxed{-4}", true),
            (Task::Gsm8k, num("4"), r"\boxed{+4}", false),
            (Task::Gsm8k, num("7"), "I think 3 then 7", true),
            (Task::Gsm8k, num("7"), "no number", false),
            (Task::Gsm8k, num("0"), r"\boxed{}", false),
            (Task::Gsm8k, num("1"), r"\boxed{\frac{1}{2}}", true),
            (Task::Aime2024, int("025"), r"\boxed{25}", true),
            (Task::Aime2024, int("25"), r"\boxed{025}", true),
            (Task::Aime2024, int("25"), r"\boxed{+25}", true),
            (Task::Aime2024, int("25"), r"\boxed{25.0}", false),
            (Task::Aime2024, int("25"), r"\boxed{25.5}", false),
            (Task::Aime2024, int("1"), r"\boxed{\frac{1}{2}}", true), // first number of the box
            (Task::Aime2025, int("70"), r"\boxed{-70}", false),
            (Task::Aime2025, int("0"), r"\boxed{-0}", true),
            (Task::Aime2025, int("70"), "nothing", false),
            (Task::Aime2025, int("70"), r"\boxed{seventy}", false),
            (Task::ArcEasy, lab("a"), r"\boxed{A}", true),
            (Task::ArcEasy, lab("a"), r"\boxed{ a }", true),
            (Task::ArcEasy, lab("a"), r"\boxed{\text{A}}", false), // prediction `\text{a`
            (Task::ArcEasy, lab("a"), r"\boxed{1}", false),
            (Task::ArcChallenge, lab("c"), r"\boxed{C}", true),
            (Task::Gpqa, lab("b"), r"\boxed{B}", true),
            (Task::Gpqa, lab("b"), "B", false), // no box and no number: no prediction
            (Task::Medqa, lab("d"), r"\boxed{D}", true),
        ];
        for (i, (task, gold, text, want)) in cases.iter().enumerate() {
            assert_eq!(correct(*task, gold, text), *want, "case {i}: {task} {gold:?} {text:?}");
        }
    }

    #[test]
    fn labels_and_medqa() {
        assert_eq!(map_label("1"), "a");
        assert_eq!(map_label(" 4 "), "d");
        assert_eq!(map_label("E"), "e");
        assert_eq!(map_label("5"), "5");
        assert_eq!(option_gold(""), None);
        let opts = ["A. VII", "B. VIIa", "C. X", "D. XII"];
        assert_eq!(medqa_gold("X", &opts), Some(Gold::Label("c".into())));
        assert_eq!(medqa_gold("VIIa", &opts), Some(Gold::Label("b".into())));
        assert_eq!(medqa_gold("Y", &opts), None);
        assert_eq!(medqa_gold("E", &["A. x", "B. x", "C. x", "D. x", "E. E"]), None);
    }

    #[test]
    fn python_int() {
        assert_eq!(py_int("025").as_deref(), Some("25"));
        assert_eq!(py_int("-0").as_deref(), Some("0"));
        assert_eq!(py_int(" +7 ").as_deref(), Some("7"));
        assert_eq!(py_int("1_000").as_deref(), Some("1000"));
        assert_eq!(py_int("99999999999999999999999").as_deref(), Some("99999999999999999999999"));
        for bad in ["", "-", "1.0", "1__0", "_1", "1_", "a", "1 2", "0x10"] {
            assert_eq!(py_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn predictions() {
        assert_eq!(predict(Task::Gpqa, r"\boxed{ C }").as_deref(), Some("c"));
        assert_eq!(predict(Task::Gsm8k, "none"), None);
        let code = "x\n```python\ndef f(): return 1\n```";
        assert_eq!(predict(Task::MbppPlus, code).as_deref(), Some("def f(): return 1"));
        assert_eq!(Gold::Tests("assert f() == 1".into()).as_record(), "pass");
    }
}
