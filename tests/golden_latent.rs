//! LatentMAS, TextMAS and the single baseline against tools/golden_latent.py (transformers' Qwen3 plus a short
//! reimplementation of LATENTMAS.md, cross-checked against the authors' code; see tests/data/golden/README.md).
//! Tolerances (from that README): ids, lengths and texts exact; fed vectors ≤ 1e-4 × max|golden|; W_a ≤ 1e-5
//! absolute; target_norm ≤ 1e-6 relative.

use std::path::Path;

use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method};
use latentmas::mas::prompts::PromptSet;
use latentmas::mas::run::{run_batch, RunConfig, RunOutput};
use latentmas::sample::SamplingParams;
use serde_json::Value;

fn golden(model: &str) -> Value {
    let text = std::fs::read_to_string(format!("tests/data/golden/latent_{model}.json")).expect("golden json");
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn config(case: &Value) -> RunConfig {
    let method = match case["method"].as_str().unwrap() {
        "latent_mas" => Method::Latent,
        "text_mas" => Method::Text,
        _ => Method::Single,
    };
    RunConfig {
        method,
        topology: case["topology"].as_str().unwrap_or("sequential").parse().unwrap(),
        family: Family::Math,
        latent_steps: case["latent_steps"].as_u64().unwrap_or(0) as usize,
        think: case["think"].as_bool().unwrap(),
        compat_reference: case["m0_empty_cache"].as_bool().unwrap(),
        sampling: SamplingParams::greedy(),
        max_new_tokens: 12,
        text_mas_context_length: latentmas::mas::run::REFERENCE_CONTEXT_LENGTH,
    }
}

fn open(model: &str) -> Engine {
    Engine::open(Path::new(&format!("tests/data/{model}")), KvBudget::Tokens(4096)).unwrap()
}

/// Compares one question's trace and report with a golden case.
fn check_case(model: &str, name: &str, case: &Value, out: &RunOutput, q: usize) {
    let trace = &out.traces[q];
    let report = &out.reports[q];
    let agents = case["agents"].as_array().unwrap();
    assert_eq!(trace.agents.len(), agents.len(), "{model}/{name}: agent count");
    for (got, want) in trace.agents.iter().zip(agents) {
        let who = format!("{model}/{name}/{}", want["role"]);
        assert_eq!(got.prompt_ids, ids(&want["prompt_ids"]), "{who}: prompt ids");
        assert_eq!(got.kv_len_before, want["kv_len_before"].as_u64().unwrap() as usize, "{who}: kv_len_before");
        let gen = ids(&want["generated_ids"]);
        assert_eq!(got.generated_ids, gen, "{who}: generated ids");
        // Golden kv_len_after is before decoding; the last generated token is never fed back.
        let after = want["kv_len_after"].as_u64().unwrap() as usize + gen.len().saturating_sub(1);
        assert_eq!(got.kv_len_after, after, "{who}: kv_len_after");
        let fed = want["latent_inputs"].as_array().unwrap();
        assert_eq!(got.latent_inputs.len(), fed.len(), "{who}: latent steps");
        for (step, (g, w)) in got.latent_inputs.iter().zip(fed).enumerate() {
            let e = floats(&w["e"]);
            let scale = e.iter().fold(0f32, |a, b| a.max(b.abs()));
            let err = g.full.iter().zip(&e).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(err <= 1e-4 * scale, "{who}: fed vector {step}: max |diff| {err:e} > 1e-4 × {scale}");
            let norm = w["norm"].as_f64().unwrap() as f32;
            assert!((g.norm - norm).abs() <= 1e-5 * norm, "{who}: norm {} vs {norm}", g.norm);
        }
    }
    assert_eq!(report.text, case["final_text"].as_str().unwrap(), "{model}/{name}: final text");
}

fn run_case(
    engine: &mut Engine,
    align_on: &Alignment,
    prompts: &PromptSet,
    case: &Value,
    questions: &[String],
) -> RunOutput {
    let cfg = config(case);
    let off;
    let align = match case["realign"].as_bool() {
        Some(true) => Some(align_on),
        _ if cfg.method == Method::Latent => {
            off = Alignment::identity(align_on.target_norm);
            Some(&off)
        }
        _ => None,
    };
    run_batch(engine, prompts, align, &cfg, questions).unwrap()
}

fn check_model(model: &str) {
    let g = golden(model);
    let mut engine = open(model);
    let prompts = PromptSet::from_file(Path::new("tests/data/prompts_tiny.json")).unwrap();
    let v = g["V"].as_u64().unwrap() as usize;
    assert_eq!(engine.vocab_limit(), v);
    let align = Alignment::compute(&engine.model, v).unwrap();
    let want_w = g["alignment"]["W_a"].as_array().unwrap().iter().flat_map(floats).collect::<Vec<_>>();
    let got_w = align.w_a().unwrap();
    let err = got_w.iter().zip(&want_w).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(err <= 1e-5, "{model}: W_a max |diff| {err:e}");
    let tn = g["alignment"]["target_norm"].as_f64().unwrap() as f32;
    assert!((align.target_norm - tn).abs() <= 1e-6 * tn, "{model}: target_norm {} vs {tn}", align.target_norm);
    for (name, case) in g["cases"].as_object().unwrap() {
        let q = case["question"].as_str().unwrap().to_string();
        let out = run_case(&mut engine, &align, &prompts, case, &[q]);
        check_case(model, name, case, &out, 0);
    }
}

#[test]
fn tied_model_matches_reference_semantics() {
    check_model("tiny-tied");
}

#[test]
fn untied_model_matches_reference_semantics() {
    check_model("tiny-untied");
}

#[test]
fn a_batch_of_two_questions_reproduces_each_golden_row() {
    for model in ["tiny-tied", "tiny-untied"] {
        let g = golden(model);
        let mut engine = open(model);
        let prompts = PromptSet::from_file(Path::new("tests/data/prompts_tiny.json")).unwrap();
        let align = Alignment::compute(&engine.model, engine.vocab_limit()).unwrap();
        for realign in ["off", "on"] {
            let c1 = &g["cases"][format!("latent_seq_m3_realign_{realign}")];
            let c2 = &g["cases"][format!("latent_seq_m3_realign_{realign}_q2")];
            let questions =
                [c1["question"].as_str().unwrap().to_string(), c2["question"].as_str().unwrap().to_string()];
            let out = run_case(&mut engine, &align, &prompts, c1, &questions);
            check_case(model, &format!("batch row 0, realign {realign}"), c1, &out, 0);
            check_case(model, &format!("batch row 1, realign {realign}"), c2, &out, 1);
        }
    }
}
