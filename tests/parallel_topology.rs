//! The parallel topology (our extension): the three experts run as separate rows of one batch, each at the
//! positions it holds in the chain and seeing only itself. The summarizer must find exactly the KV layout
//! of the chain in which every expert saw no predecessor: expert i's prompt + m latents at slots
//! [offset_i, offset_i + len_i + m) with RoPE positions from offset_i. We rebuild that layout expert by
//! expert with the engine's own phases and compare every layer's K and V (tolerance 1e-6: the same dot
//! products in the same order, only batched differently).

use std::path::Path;

use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method, Topology};
use latentmas::mas::prompts::PromptSet;
use latentmas::mas::run::{run_batch, RunConfig};
use latentmas::sample::SamplingParams;

#[test]
fn summarizer_sees_the_chain_layout_of_independent_experts() {
    let prompts = PromptSet::from_file(Path::new("tests/data/prompts_tiny.json")).unwrap();
    let mut engine = Engine::open(Path::new("tests/data/tiny-untied"), KvBudget::Tokens(4096)).unwrap();
    let align = Alignment::compute(&engine.model, engine.vocab_limit()).unwrap();
    let m = 3;
    let cfg = RunConfig {
        method: Method::Latent,
        topology: Topology::Parallel,
        family: Family::Math,
        latent_steps: m,
        think: false,
        compat_reference: false,
        sampling: SamplingParams::greedy(),
        max_new_tokens: 4,
        text_mas_context_length: latentmas::mas::run::REFERENCE_CONTEXT_LENGTH,
    };
    let out = run_batch(&mut engine, &prompts, Some(&align), &cfg, &["What is 12 plus 30?".to_string()]).unwrap();
    let trace = &out.traces[0];
    // Experts are contiguous and the summarizer starts where the last expert ends.
    let mut offset = 0;
    for t in &trace.agents[..3] {
        assert_eq!(t.kv_len_before, offset, "{}", t.role);
        offset += t.prompt_ids.len() + m;
        assert_eq!(t.kv_len_after, offset, "{}", t.role);
    }
    assert_eq!(trace.agents[3].kv_len_before, offset);
    let layers = engine.model.config.num_hidden_layers;
    let width = engine.model.config.num_key_value_heads * engine.model.config.head_dim;
    let parallel: Vec<Vec<f32>> = (0..layers)
        .map(|l| {
            let (k, v) = engine.kv.layer(l);
            [&k[..offset * width], &v[..offset * width]].concat()
        })
        .collect();

    // Rebuild: each expert alone, in a fresh row whose positions start at its chain offset.
    engine.kv.reset();
    let mut expected: Vec<Vec<f32>> = vec![vec![0f32; 2 * offset * width]; layers];
    for t in &trace.agents[..3] {
        engine.kv.reset();
        let mut row = engine.kv.reserve(t.prompt_ids.len() + m).unwrap();
        row.pos_base = t.kv_len_before;
        let mut rows = [row];
        engine.prefill(&mut rows, &[&t.prompt_ids], false).unwrap();
        engine.latent_steps(&mut rows, m, &align, |_, _| {}).unwrap();
        for (l, exp) in expected.iter_mut().enumerate() {
            let (k, v) = engine.kv.layer(l);
            let n = (t.kv_len_after - t.kv_len_before) * width;
            let at = t.kv_len_before * width;
            exp[at..at + n].copy_from_slice(&k[..n]);
            exp[offset * width + at..offset * width + at + n].copy_from_slice(&v[..n]);
        }
    }
    for l in 0..layers {
        let err = parallel[l].iter().zip(&expected[l]).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(err <= 1e-6, "layer {l}: K/V differ by {err:e}");
    }
}

#[test]
fn parallel_differs_from_the_chain_where_experts_would_see_predecessors() {
    // Sanity: the hierarchical chain lets expert 2 attend to expert 1, so its fed vectors differ.
    let prompts = PromptSet::from_file(Path::new("tests/data/prompts_tiny.json")).unwrap();
    let mut engine = Engine::open(Path::new("tests/data/tiny-tied"), KvBudget::Tokens(4096)).unwrap();
    let align = Alignment::identity(1.0);
    let mut cfg = RunConfig {
        method: Method::Latent,
        topology: Topology::Parallel,
        family: Family::Math,
        latent_steps: 2,
        think: false,
        compat_reference: false,
        sampling: SamplingParams::greedy(),
        max_new_tokens: 2,
        text_mas_context_length: latentmas::mas::run::REFERENCE_CONTEXT_LENGTH,
    };
    let q = ["What is 12 plus 30?".to_string()];
    let par = run_batch(&mut engine, &prompts, Some(&align), &cfg, &q).unwrap();
    cfg.topology = Topology::Hierarchical;
    let chain = run_batch(&mut engine, &prompts, Some(&align), &cfg, &q).unwrap();
    assert_eq!(par.traces[0].agents[0].latent_inputs[0].full, chain.traces[0].agents[0].latent_inputs[0].full);
    assert_ne!(par.traces[0].agents[1].latent_inputs[0].full, chain.traces[0].agents[1].latent_inputs[0].full);
}
