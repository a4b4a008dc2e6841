//! How one dataset record becomes the `{question}` string and its gold answer, per task, as the
//! reference's `data.py` does it (`_question/*` in `reference_prompts.json` holds the same rules as data).
//!
//! Public operations:
//! - [`build`]: record (a JSON object in the dataset's field layout) → [`Built`] (id, question, gold),
//!   or a one-line reason why the record is unusable.
//! - [`CODE_PREAMBLE`]: the fixed opening of both code-task templates.
//!
//! Field layouts (Hugging Face datasets the reference loads):
//! - gsm8k: `question`, `answer` (`… #### N`). Question: `question` stripped.
//! - aime2024 / aime2025: `problem`, `answer` (string or number). Question: `problem` stripped.
//! - gpqa: `question` (options inline as `A) …`), `answer` (a letter). Question: `question` stripped.
//! - arc_easy / arc_challenge: `question` (stem), `choices {text: […], label: […]}`, `answerKey`. Question:
//!   stem stripped, then one `label: text` line per option, labels 1–4 mapped to a–d, others lowercased.
//! - medqa: `query` (used as is), `options` (`["A. …", …]`), `answer` (option text).
//! - mbppplus: `prompt`, `test_list` (≥ 3 asserts; the first three are shown), `test` (the test program).
//! - humanevalplus: `prompt`, `entry_point`, `test` (defines `check(candidate)`; the gold program is `test`
//!   with every `candidate` replaced by the entry point, then `\n\ncheck(<entry_point>)`).
//!
//! MBPP+ `test_imports` are not used, as in the reference (all ten items that have them pass without).
//! Ids: an `id` or `task_id` field (string or integer) when present; the caller falls back to the index.

use serde_json::Value;

use super::extract::py_strip;
use super::score::{aime_gold, gsm8k_gold, map_label, medqa_gold, option_gold, Gold};
use super::task::Task;

/// The opening shared by the mbpp+ and humaneval+ question templates.
pub const CODE_PREAMBLE: &str = "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```python\nYOUR_PYTHON_CODE\n```:\n";

/// A usable record.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The record's own id field, if it has one.
    pub id: Option<String>,
    pub question: String,
    pub gold: Gold,
}

/// Builds question and gold from one record; `Err` holds why the record cannot be used.
pub fn build(task: Task, record: &Value) -> Result<Built, String> {
    if !record.is_object() {
        return Err("record is not a JSON object".to_string());
    }
    let (question, gold) = match task {
        Task::Gsm8k => {
            let gold = gsm8k_gold(text(record, "answer")?).ok_or("field `answer` has no `#### NUMBER`")?;
            (py_strip(text(record, "question")?).to_string(), gold)
        }
        Task::Aime2024 | Task::Aime2025 => {
            let answer = scalar(record, "answer")?;
            let gold = aime_gold(&answer).ok_or_else(|| format!("answer {answer:?} is not an integer"))?;
            (py_strip(text(record, "problem")?).to_string(), gold)
        }
        Task::Gpqa => {
            // The reference normalises the letter but does not map numeric labels here.
            let answer = super::extract::normalize(text(record, "answer")?);
            if answer.is_empty() {
                return Err("field `answer` is empty".to_string());
            }
            (py_strip(text(record, "question")?).to_string(), Gold::Label(answer))
        }
        Task::ArcEasy | Task::ArcChallenge => arc(record)?,
        Task::Medqa => {
            let answer = scalar(record, "answer")?;
            let options = strings(record, "options")?;
            let gold = medqa_gold(&answer, &options)
                .ok_or_else(|| format!("answer {answer:?} is in none of the first four options"))?;
            (text(record, "query")?.to_string(), gold)
        }
        Task::MbppPlus => {
            let tests = strings(record, "test_list")?;
            if tests.len() < 3 {
                return Err(format!("field `test_list` has {} asserts; the template needs 3", tests.len()));
            }
            let question = format!(
                "{CODE_PREAMBLE}{}\nYour answer will be tested on test cases like:\n{}\n{}\n{}\n",
                text(record, "prompt")?,
                tests[0],
                tests[1],
                tests[2]
            );
            (question, Gold::Tests(text(record, "test")?.to_string()))
        }
        Task::HumanEvalPlus => {
            let entry = text(record, "entry_point")?;
            let program = format!("{}\n\ncheck({entry})", text(record, "test")?.replace("candidate", entry));
            (format!("{CODE_PREAMBLE}{}\n", text(record, "prompt")?), Gold::Tests(program))
        }
    };
    Ok(Built { id: id_field(record), question, gold })
}

/// ARC: stem + `label: text` lines. Like the reference, options go through a label → text map (a
/// repeated label shows its last text) but keep their order.
fn arc(record: &Value) -> Result<(String, Gold), String> {
    let stem = py_strip(text(record, "question")?);
    let choices = record.get("choices").ok_or("missing field `choices`")?;
    let texts = strings(choices, "text").map_err(|e| format!("choices: {e}"))?;
    let labels = strings(choices, "label").map_err(|e| format!("choices: {e}"))?;
    let mapped: Vec<(String, &str)> = labels.iter().zip(&texts).map(|(l, t)| (map_label(l), py_strip(t))).collect();
    let lines: Vec<String> = mapped
        .iter()
        .map(|(label, _)| {
            let last = mapped.iter().rev().find(|(l, _)| l == label).map_or("", |(_, t)| t);
            format!("{label}: {last}")
        })
        .collect();
    let gold = option_gold(text(record, "answerKey")?).ok_or("field `answerKey` is empty")?;
    Ok((format!("{stem}\n{}", lines.join("\n")), gold))
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field `{key}` is not a string")),
        None => Err(format!("missing field `{key}`")),
    }
}

/// A string or number field as Python's `str()` would print it.
fn scalar(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(format!("field `{key}` is not a string or number")),
        None => Err(format!("missing field `{key}`")),
    }
}

fn strings<'a>(v: &'a Value, key: &str) -> Result<Vec<&'a str>, String> {
    let arr = match v.get(key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("field `{key}` is not a list")),
        None => return Err(format!("missing field `{key}`")),
    };
    arr.iter().map(|x| x.as_str().ok_or_else(|| format!("field `{key}` holds a non-string"))).collect()
}

fn id_field(v: &Value) -> Option<String> {
    ["id", "task_id"].iter().find_map(|k| match v.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arc_maps_numeric_labels_and_keeps_order() {
        let r = json!({"id": "q1", "question": " Which? ", "answerKey": "2",
            "choices": {"text": [" one ", "two", "three"], "label": ["1", "2", "3"]}});
        let b = build(Task::ArcEasy, &r).expect("builds");
        assert_eq!(b.question, "Which?\na: one\nb: two\nc: three");
        assert_eq!(b.gold, Gold::Label("b".into()));
        assert_eq!(b.id.as_deref(), Some("q1"));
    }

    #[test]
    fn humaneval_gold_program() {
        let r = json!({"task_id": "HumanEval/9", "prompt": "def f(x):\n", "entry_point": "f",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n"});
        let b = build(Task::HumanEvalPlus, &r).expect("builds");
        assert_eq!(b.gold, Gold::Tests("def check(f):\n    assert f(1) == 1\n\n\ncheck(f)".into()));
        assert!(b.question.starts_with(CODE_PREAMBLE) && b.question.ends_with("def f(x):\n\n"));
    }

    #[test]
    fn bad_records_say_why() {
        let e = |t, v: Value| build(t, &v).err().unwrap_or_default();
        assert_eq!(e(Task::Gsm8k, json!({"question": "q"})), "missing field `answer`");
        assert_eq!(e(Task::Gsm8k, json!({"question": "q", "answer": "7"})), "field `answer` has no `#### NUMBER`");
        assert_eq!(e(Task::Aime2024, json!({"problem": "p", "answer": "1.5"})), "answer \"1.5\" is not an integer");
        assert_eq!(e(Task::Gpqa, json!([1])), "record is not a JSON object");
        let mb = json!({"prompt": "p", "test": "t", "test_list": ["a", "b"]});
        assert!(e(Task::MbppPlus, mb).contains("needs 3"));
    }

    #[test]
    fn aime_number_answers() {
        let b = build(Task::Aime2025, &json!({"problem": " p ", "answer": 70})).expect("builds");
        assert_eq!((b.question.as_str(), b.gold), ("p", Gold::Integer("70".into())));
    }
}
