//! Fidelity to the reference's prompts: rendering the authors' prompt strings (../shared/reference/
//! reference_prompts.json, loaded with `--prompts`' loader) through our chat template and tokenizer gives
//! the token ids transformers gives (expected ids from tools/golden_prompts.py). Users' clones have no
//! ../shared: there the test is reported as ignored, with that reason.

mod harness;

use std::path::Path;

use harness::trial;

use latentmas::mas::prompts::{fill, PromptSet};
use latentmas::mas::run::chat_ids;
use latentmas::tokenizer::Tokenizer;

fn main() {
    harness::run(vec![trial!(reference_prompts_render_to_the_reference_token_ids, needs reference_prompts)]);
}

fn reference_prompts() -> Result<(), String> {
    harness::shared(REFERENCE_PROMPTS).map(drop)
}

const REFERENCE_PROMPTS: &str = "reference/reference_prompts.json";

fn reference_prompts_render_to_the_reference_token_ids() {
    let prompts = PromptSet::from_file(&harness::shared(REFERENCE_PROMPTS).unwrap()).unwrap();
    let tok = Tokenizer::load(Path::new("tests/data/qwen3-tokenizer")).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/golden/reference_prompt_ids.json").unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let family = case["family"].as_str().unwrap();
        let template = match case["role"].as_str() {
            None => prompts.baseline(family).unwrap(),
            Some(role) => prompts.template(case["method_topology"].as_str().unwrap(), role, family).unwrap(),
        };
        let user = fill(template, case["question"].as_str().unwrap(), case["ctx"].as_str().unwrap());
        let suffix = if case["think"].as_bool().unwrap() { "<think>" } else { "" };
        let ids = chat_ids(&tok, &prompts.system, &user, suffix).unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "prompt {} (think {})", case["key"], case["think"]);
    }
}
