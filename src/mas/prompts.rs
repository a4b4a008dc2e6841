//! Prompt sets: the role prompts of every method, topology and task family, with `{question}` and `{ctx}`
//! placeholders, in the JSON shape of the reference's exported prompts (`reference_prompts.json`).
//!
//! Look-up order for a role: `<method>_<topology>/<role>/<family>`, then `<method>_<topology>/<role>`; the
//! single baseline uses `baseline/<family>`; a missing `medqa` entry falls back to `mc`.
//! Our own set (`default_prompts.json`, our wording) is built in; `--prompts FILE` loads any other, and
//! `--prompts reference` the set imported from the authors' checkout ([`super::reference_prompts`]).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

const DEFAULT_PROMPTS: &str = include_str!("default_prompts.json");

/// The prompt families, method-topology key prefixes and roles a complete set answers.
pub const FAMILIES: [&str; 4] = ["math", "mc", "medqa", "code"];
pub const METHOD_TOPOLOGIES: [&str; 4] =
    ["latent_sequential", "latent_hierarchical", "text_sequential", "text_hierarchical"];
pub const ROLES: [&str; 4] = ["planner", "critic", "refiner", "judger"];

/// A loaded prompt set.
#[derive(Debug, Clone)]
pub struct PromptSet {
    entries: HashMap<String, String>,
    /// The system message of every agent.
    pub system: String,
    /// Where the set came from (for reports).
    pub source: String,
}

impl PromptSet {
    /// Our built-in set.
    pub fn builtin() -> Self {
        Self::from_json(DEFAULT_PROMPTS, "builtin").expect("the built-in prompt set is valid")
    }

    /// Reads a prompt-set file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Prompts(format!("{source}: invalid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| Error::Prompts(format!("{source}: expected a JSON object")))?;
        let entries: HashMap<String, String> =
            obj.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect();
        let system = entries
            .get("_system")
            .cloned()
            .ok_or_else(|| Error::Prompts(format!("{source}: no \"_system\" entry (the agents' system message)")))?;
        Ok(PromptSet { entries, system, source: source.to_string() })
    }

    /// Prompt entries (the system message and `_`-prefixed notes not counted).
    pub fn len(&self) -> usize {
        self.entries.keys().filter(|k| !k.starts_with('_')).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The template of `role` for `<method>_<topology>` (e.g. `latent_sequential`) and `family`.
    pub fn template(&self, method_topology: &str, role: &str, family: &str) -> Result<&str> {
        let mut keys = vec![format!("{method_topology}/{role}/{family}"), format!("{method_topology}/{role}")];
        if family == "medqa" {
            keys.insert(1, format!("{method_topology}/{role}/mc"));
        }
        self.first(&keys)
    }

    /// The single-agent baseline template of `family`.
    pub fn baseline(&self, family: &str) -> Result<&str> {
        let mut keys = vec![format!("baseline/{family}")];
        if family == "medqa" {
            keys.push("baseline/mc".into());
        }
        self.first(&keys)
    }

    /// The look-ups a run can make that this set cannot answer (every method, topology, role and family),
    /// as `<method>_<topology>/<role>/<family>` or `baseline/<family>`.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for family in FAMILIES {
            for mt in METHOD_TOPOLOGIES {
                for role in ROLES {
                    if self.template(mt, role, family).is_err() {
                        out.push(format!("{mt}/{role}/{family}"));
                    }
                }
            }
            if self.baseline(family).is_err() {
                out.push(format!("baseline/{family}"));
            }
        }
        out
    }

    /// The first of `keys` present. Every role prompt must place the question: one without `{question}`
    /// would run the agents on a prompt that silently dropped it.
    fn first(&self, keys: &[String]) -> Result<&str> {
        let (key, text) = keys
            .iter()
            .find_map(|k| self.entries.get(k).map(|t| (k, t)))
            .ok_or_else(|| Error::Prompts(format!("{}: no prompt for any of {keys:?}", self.source)))?;
        if !text.contains("{question}") {
            return Err(Error::Prompts(format!(
                "{}: \"{key}\" has no {{question}} placeholder, so the question would never reach the agent",
                self.source
            )));
        }
        Ok(text)
    }
}

/// Substitutes `{question}` and `{ctx}` in one pass (a question containing "{ctx}" stays literal).
pub fn fill(template: &str, question: &str, ctx: &str) -> String {
    let mut out = String::with_capacity(template.len() + question.len() + ctx.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{question}") {
            out.push_str(question);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{ctx}") {
            out.push_str(ctx);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_covers_every_method_role_and_family() {
        let p = PromptSet::builtin();
        for family in ["math", "mc", "medqa", "code"] {
            for mt in ["latent_sequential", "latent_hierarchical", "text_sequential", "text_hierarchical"] {
                for role in ["planner", "critic", "refiner", "judger"] {
                    let t = p.template(mt, role, family).unwrap();
                    assert!(t.contains("{question}"), "{mt}/{role}/{family}");
                    if mt.starts_with("text") && (role == "judger" || (mt == "text_sequential" && role != "planner")) {
                        assert!(t.contains("{ctx}"), "{mt}/{role}/{family} needs the context");
                    }
                }
            }
            assert!(p.baseline(family).unwrap().contains("{question}"));
        }
        assert!(p.missing().is_empty());
        let partial = PromptSet::from_json(r#"{"_system": "S", "baseline/mc": "B {question}"}"#, "t").unwrap();
        let missing = partial.missing();
        assert!(missing.contains(&"baseline/math".to_string()) && !missing.contains(&"baseline/medqa".to_string()));
        assert_eq!(missing.len(), 4 * 4 * 4 + 2);
    }

    #[test]
    fn lookup_order_and_medqa_fallback() {
        let p = PromptSet::from_json(
            r#"{"_system": "S", "x_y/judger/mc": "MC {question}", "x_y/judger": "ANY {question}", "x_y/planner/math": "PM {question}", "baseline/mc": "B {question}"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(p.template("x_y", "judger", "medqa").unwrap(), "MC {question}");
        assert_eq!(p.template("x_y", "judger", "code").unwrap(), "ANY {question}");
        assert_eq!(p.template("x_y", "planner", "math").unwrap(), "PM {question}");
        assert!(p.template("x_y", "planner", "code").unwrap_err().to_string().contains("x_y/planner/code"));
        assert_eq!(p.baseline("medqa").unwrap(), "B {question}");
        assert!(PromptSet::from_json("{}", "t").unwrap_err().to_string().contains("_system"));
    }

    #[test]
    fn a_prompt_without_the_question_is_refused() {
        let p = PromptSet::from_json(r#"{"_system": "S", "baseline/math": "Solve it."}"#, "t").unwrap();
        let err = p.baseline("math").unwrap_err().to_string();
        assert!(err.contains("baseline/math") && err.contains("{question}"), "{err}");
    }

    #[test]
    fn fill_is_single_pass() {
        assert_eq!(fill("Q: {question}\n{ctx} \\boxed{x}", "a {ctx} b", "C"), "Q: a {ctx} b\nC \\boxed{x}");
    }
}
