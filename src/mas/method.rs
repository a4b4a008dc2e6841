//! The words of a run: method, topology, task family, and the agents each topology runs.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($word => Ok($name::$variant),)+
                    other => Err(Error::InvalidArgument(format!(
                        concat!("unknown ", stringify!($name), " {:?}; expected one of: {}"),
                        other,
                        [$($word),+].join(", ")
                    ))),
                }
            }
        }
    };
}

word_enum!(
    /// How agents collaborate.
    Method { Single => "single", Text => "text", Latent => "latent" }
);
word_enum!(
    /// Who follows whom. `Parallel` is our extension: hierarchical experts computed as separate rows.
    Topology { Sequential => "sequential", Hierarchical => "hierarchical", Parallel => "parallel" }
);
word_enum!(
    /// Prompt family of the task (answer format).
    Family { Math => "math", Mc => "mc", Medqa => "medqa", Code => "code" }
);

/// One agent of a topology: the prompt-set role key, the name reports use, and the TextMAS context label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSpec {
    pub key: &'static str,
    pub name: &'static str,
    pub label: &'static str,
}

const SEQUENTIAL: [AgentSpec; 4] = [
    AgentSpec { key: "planner", name: "planner", label: "Planner" },
    AgentSpec { key: "critic", name: "critic", label: "Critic" },
    AgentSpec { key: "refiner", name: "refiner", label: "Refiner" },
    AgentSpec { key: "judger", name: "judger", label: "Judger" },
];
const HIERARCHICAL: [AgentSpec; 4] = [
    AgentSpec { key: "planner", name: "math", label: "Math Agent" },
    AgentSpec { key: "critic", name: "science", label: "Science Agent" },
    AgentSpec { key: "refiner", name: "code", label: "Code Agent" },
    AgentSpec { key: "judger", name: "summarizer", label: "Summarizer" },
];

impl Topology {
    /// The agents in order; the last one decodes the answer.
    pub fn agents(&self) -> &'static [AgentSpec; 4] {
        match self {
            Topology::Sequential => &SEQUENTIAL,
            Topology::Hierarchical | Topology::Parallel => &HIERARCHICAL,
        }
    }

    /// The prompt-set prefix for `method` (`parallel` uses the hierarchical prompts).
    pub fn prompt_key(&self, method: Method) -> String {
        let topo = match self {
            Topology::Sequential => "sequential",
            Topology::Hierarchical | Topology::Parallel => "hierarchical",
        };
        format!("{method}_{topo}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_named() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), *m);
        }
        let e = "latentish".parse::<Method>().unwrap_err().to_string();
        assert!(e.contains("latentish") && e.contains("single, text, latent"), "{e}");
        assert_eq!(Topology::Parallel.prompt_key(Method::Latent), "latent_hierarchical");
    }
}
