//! Pulling an answer out of a model's text, exactly as the reference does (Gen-Verse/LatentMAS @ 1430ad6,
//! `utils.py`), quirks included, because published numbers were scored that way.
//!
//! Public operations:
//! - [`extract_answer`]: the raw answer: the last `\boxed{…}` (content up to its FIRST `}`), inside it the
//!   first number, else the stripped box text; with no box, the last number of the whole text.
//! - [`normalize`]: Python's `str.strip()` then `str.lower()`.
//! - [`extract_python_block`]: the last ```` ```python … ``` ```` block, stripped.
//! - [`NUMBER_PATTERN`]: the number syntax `[-+]?\d+(?:\.\d+)?` (Unicode `\d`, as in Python 3).
//! - [`predict_answer`]: a run's reported answer (the last python block for code, else the normalised answer).
//!
//! Part of the engine (every run report carries its answer); `eval` scores with it (`eval::extract`).
//!
//! Consequences worth knowing (all reference behaviour, tested in the table below):
//! `\boxed{1,000}` → `1`; `\boxed{18.00}` → `18.00`; `\boxed{\frac{1}{2}}` → `1`; `\boxed{\text{A}}` →
//! `\text{A` (no number, so the box text up to the first `}`); boxes are found left to right without
//! overlap, so in `\boxed{a \boxed{b} c}` the only box is `a \boxed{b`; an unclosed last `\boxed{` is not a box.

use std::sync::LazyLock;

use regex::Regex;

/// The reference's number syntax. Rust's `\d`, like Python 3's, is any Unicode decimal digit (Nd).
pub const NUMBER_PATTERN: &str = r"[-+]?\d+(?:\.\d+)?";

static BOXED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\boxed\{([^}]*)\}").expect("constant regex"));
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(NUMBER_PATTERN).expect("constant regex"));
// `(?s)`: `.` crosses newlines (Python's DOTALL); `(?i)`: also ```Python (Python's IGNORECASE).
static PYTHON_BLOCK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?is)```python(.*?)```").expect("constant regex"));

/// Python's `str.isspace()`: Rust's White_Space plus the four ASCII separators U+001C..U+001F, which
/// Python strips and Rust does not.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// The reference's `normalize_answer`: strip, then lowercase.
pub fn normalize(s: &str) -> String {
    py_strip(s).to_lowercase()
}

/// The reference's `extract_gsm8k_answer` (used for every non-code task), not yet normalised.
/// `None` when there is no box and no number anywhere.
pub fn extract_answer(text: &str) -> Option<String> {
    // `find_iter` is leftmost-first and non-overlapping, like Python's `re.findall`.
    if let Some(caps) = BOXED.captures_iter(text).last() {
        let content = caps.get(1).map_or("", |m| m.as_str());
        return Some(match NUMBER.find(content) {
            Some(m) => m.as_str().to_string(),
            None => py_strip(content).to_string(),
        });
    }
    NUMBER.find_iter(text).last().map(|m| m.as_str().to_string())
}

/// The reference's `extract_markdown_python_block`: the last ```` ```python ```` block's body, stripped.
pub fn extract_python_block(text: &str) -> Option<String> {
    let caps = PYTHON_BLOCK.captures_iter(text).last()?;
    Some(py_strip(caps.get(1).map_or("", |m| m.as_str())).to_string())
}

/// A run's answer by answer kind alone (runs know their prompt family, not their dataset): the last python
/// block for code, else the normalised [`extract_answer`].
pub fn predict_answer(code: bool, text: &str) -> Option<String> {
    if code {
        extract_python_block(text)
    } else {
        extract_answer(text).map(|a| normalize(&a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (model text, expected raw extraction).
    const CASES: &[(&str, Option<&str>)] = &[
        (r"so \boxed{42}.", Some("42")),
        (r"\boxed{1,000}", Some("1")),
        (r"\boxed{18.00}", Some("18.00")),
        (r"\boxed{\frac{1}{2}}", Some("1")),
        (r"\boxed{\dfrac{3}{4}}", Some("3")),
        (r"\boxed{\text{A}}", Some(r"\text{A")),
        (r"\boxed{\boxed{5}}", Some("5")),
        (r"\boxed{a \boxed{b} c}", Some(r"a \boxed{b")),
        (r"\boxed{ C }", Some("C")),
        (r"\boxed{}", Some("")),
        (r"\boxed{-7}", Some("-7")),
        (r"\boxed{+5}", Some("+5")),
        (r"\boxed{x = -3.25}", Some("-3.25")),
        (r"\boxed{3.14.15}", Some("3.14")),
        (r"\boxed{1e5}", Some("1")),
        (r"\boxed{2} then \boxed{3}", Some("3")),
        (r"\boxed{3} and an unclosed \boxed{4", Some("3")),
        ("\\boxed{line\none}", Some("line\none")),
        ("\\boxed{\u{1c} b \u{3000}}", Some("b")),
        ("\\boxed{\u{0663}\u{0662}}", Some("\u{0663}\u{0662}")),
        ("no box: 12 apples, then -3.5 and finally 7.", Some("7")),
        ("value 2.5", Some("2.5")),
        ("the answer is 1,000", Some("000")),
        ("no digits at all", None),
        ("", None),
        (r"\boxed{no number here}", Some("no number here")),
        (r"unclosed \boxed{12", Some("12")),
    ];

    #[test]
    fn extraction_table() {
        for (i, (text, want)) in CASES.iter().enumerate() {
            let want = want.map(str::to_string);
            assert_eq!(extract_answer(text), want, "case {i}: {text:?}");
        }
    }

    #[test]
    fn normalize_is_python_strip_lower() {
        assert_eq!(normalize("  \u{1f}ABC\t\n"), "abc");
        assert_eq!(normalize(r"\text{A"), r"\text{a");
        // Final sigma, as Python's `lower()` does it.
        assert_eq!(normalize("ΟΔΟΣ"), "\u{3bf}\u{3b4}\u{3bf}\u{3c2}");
    }

    #[test]
    fn python_blocks() {
        let t = "```python\nprint(1)\n```\ntext\n```Python\n  def f():\n    return 2\n```";
        assert_eq!(extract_python_block(t).as_deref(), Some("def f():\n    return 2"));
        assert_eq!(extract_python_block("```py\nx\n```"), None);
        assert_eq!(extract_python_block("```python\nunclosed"), None);
        assert_eq!(extract_python_block("```python```").as_deref(), Some(""));
    }
}
