//! Multi-agent methods on one engine: prompts ([`prompts`]), the words of a run ([`method`]), batch runs of
//! single / TextMAS / LatentMAS ([`run::run_batch`]) and their reports and traces ([`report`]).

pub mod method;
pub mod prompts;
pub mod reference_prompts;
pub mod report;
pub mod run;
