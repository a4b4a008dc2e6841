//! A batch gives every question the tokens it gets alone: rows have their own slots and positions and no
//! padding, so greedy results of a batch of 3 questions of different lengths equal the three single runs,
//! token for token, for every method and topology (and so do the fed latent vectors, bit for bit up to the
//! summation order of a batched matmul: compared at 1e-5 × max |value|).

use std::path::Path;

use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method, Topology};
use latentmas::mas::prompts::PromptSet;
use latentmas::mas::run::{run_batch, RunConfig};
use latentmas::sample::SamplingParams;

const QUESTIONS: [&str; 3] =
    ["What is 12 plus 30?", "Tom has 3 apples and buys 4 more. How many apples does he have now?", "2+2?"];

fn cases() -> Vec<(Method, Topology)> {
    vec![
        (Method::Single, Topology::Sequential),
        (Method::Text, Topology::Sequential),
        (Method::Text, Topology::Hierarchical),
        (Method::Latent, Topology::Sequential),
        (Method::Latent, Topology::Hierarchical),
        (Method::Latent, Topology::Parallel),
    ]
}

#[test]
fn batch_of_three_equals_three_single_runs() {
    let prompts = PromptSet::from_file(Path::new("tests/data/prompts_tiny.json")).unwrap();
    for model in ["tiny-tied", "tiny-untied"] {
        let mut engine = Engine::open(Path::new(&format!("tests/data/{model}")), KvBudget::Tokens(8192)).unwrap();
        let align = Alignment::compute(&engine.model, engine.vocab_limit()).unwrap();
        for (method, topology) in cases() {
            let cfg = RunConfig {
                method,
                topology,
                family: Family::Math,
                latent_steps: if method == Method::Latent { 4 } else { 0 },
                think: false,
                compat_reference: false,
                sampling: SamplingParams::greedy(),
                max_new_tokens: 10,
                text_mas_context_length: latentmas::mas::run::REFERENCE_CONTEXT_LENGTH,
            };
            let questions: Vec<String> = QUESTIONS.iter().map(|q| q.to_string()).collect();
            let batch = run_batch(&mut engine, &prompts, Some(&align), &cfg, &questions).unwrap();
            for (i, q) in questions.iter().enumerate() {
                let alone = run_batch(&mut engine, &prompts, Some(&align), &cfg, std::slice::from_ref(q)).unwrap();
                let who = format!("{model} {method}/{topology} question {i}");
                let (b, a) = (&batch.traces[i], &alone.traces[0]);
                assert_eq!(b.agents.len(), a.agents.len(), "{who}");
                for (x, y) in b.agents.iter().zip(&a.agents) {
                    assert_eq!(x.prompt_ids, y.prompt_ids, "{who} {}: prompt ids", x.role);
                    assert_eq!(x.generated_ids, y.generated_ids, "{who} {}: generated ids", x.role);
                    assert_eq!(
                        (x.kv_len_before, x.kv_len_after),
                        (y.kv_len_before, y.kv_len_after),
                        "{who} {}",
                        x.role
                    );
                    for (u, v) in x.latent_inputs.iter().zip(&y.latent_inputs) {
                        let scale = v.full.iter().fold(0f32, |m, z| m.max(z.abs()));
                        let err = u.full.iter().zip(&v.full).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                        assert!(err <= 1e-5 * scale, "{who} {}: fed vector differs by {err:e}", x.role);
                    }
                }
                assert_eq!(batch.reports[i].text, alone.reports[0].text, "{who}: text");
            }
        }
    }
}
