//! The nine benchmarks of the paper, named by the words the CLI accepts.
//!
//! Public operations:
//! - [`Task`]: `FromStr` / `Display` with the CLI words (`gsm8k`, `aime2024`, `aime2025`, `gpqa`, `arc_easy`,
//!   `arc_challenge`, `medqa`, `mbppplus`, `humanevalplus`); serde uses the same words.
//! - [`Task::family`]: the prompt family (`math`, `mc`, `medqa`, `code`) used to pick agent prompts.
//! - [`Task::ALL`], [`Task::is_code`].

use std::fmt;
use std::str::FromStr;

use latentmas::error::{Error, Result};

/// One benchmark. The set and the words are the reference's `--task` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Gsm8k,
    Aime2024,
    Aime2025,
    Gpqa,
    ArcEasy,
    ArcChallenge,
    Medqa,
    MbppPlus,
    HumanEvalPlus,
}

impl Task {
    /// Every task, in the order the paper lists them.
    pub const ALL: [Task; 9] = [
        Task::Gsm8k,
        Task::Aime2024,
        Task::Aime2025,
        Task::Gpqa,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Medqa,
        Task::MbppPlus,
        Task::HumanEvalPlus,
    ];

    /// The CLI word for this task.
    pub fn as_str(&self) -> &'static str {
        match self {
            Task::Gsm8k => "gsm8k",
            Task::Aime2024 => "aime2024",
            Task::Aime2025 => "aime2025",
            Task::Gpqa => "gpqa",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Medqa => "medqa",
            Task::MbppPlus => "mbppplus",
            Task::HumanEvalPlus => "humanevalplus",
        }
    }

    /// Prompt family: `math` (gsm8k, aime*), `mc` (arc*, gpqa), `medqa`, `code` (mbpp+, humaneval+).
    pub fn family(&self) -> &'static str {
        match self {
            Task::Gsm8k | Task::Aime2024 | Task::Aime2025 => "math",
            Task::Gpqa | Task::ArcEasy | Task::ArcChallenge => "mc",
            Task::Medqa => "medqa",
            Task::MbppPlus | Task::HumanEvalPlus => "code",
        }
    }

    /// True for the tasks scored by running the answer's code against the benchmark's tests.
    pub fn is_code(&self) -> bool {
        self.family() == "code"
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Task::ALL.iter().copied().find(|t| t.as_str() == s).ok_or_else(|| {
            let words: Vec<&str> = Task::ALL.iter().map(|t| t.as_str()).collect();
            Error::InvalidArgument(format!("unknown task {s:?}; expected one of {}", words.join("|")))
        })
    }
}

impl serde::Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Task {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for t in Task::ALL {
            assert_eq!(t.to_string().parse::<Task>().ok(), Some(t));
        }
        assert!("gsm8K".parse::<Task>().is_err());
        assert!("humaneval".parse::<Task>().is_err());
    }

    #[test]
    fn families() {
        let fam: Vec<&str> = Task::ALL.iter().map(|t| t.family()).collect();
        assert_eq!(fam, ["math", "math", "math", "mc", "mc", "mc", "medqa", "code", "code"]);
        assert!(Task::MbppPlus.is_code() && !Task::Medqa.is_code());
    }
}
