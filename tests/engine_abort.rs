//! The engine's abort flag: set from another thread, it stops decode and the latent steps with
//! `Error::Interrupted` within one step, and the engine is usable again once the flag is cleared.

use std::path::Path;
use std::sync::atomic::Ordering;

use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::sample::SamplingParams;
use latentmas::Error;

#[test]
fn abort_stops_decode_and_latent_steps_and_clears() {
    let mut engine = Engine::open(Path::new("tests/data/tiny-trained"), KvBudget::Tokens(512)).unwrap();
    let align = Alignment::compute(&engine.model, engine.vocab_limit()).unwrap();
    let ids = engine.tokenizer.encode("What is 2 plus 3?").unwrap();
    let greedy = SamplingParams::greedy();
    let flag = engine.abort_flag();

    // Decoding the reference (no abort) gives the count to compare with.
    let mut row = [engine.kv.reserve(ids.len() + 64).unwrap()];
    engine.prefill(&mut row, &[&ids], true).unwrap();
    let full = engine.decode(&mut row, &greedy, 16, |_, _, _| {}).unwrap();
    assert!(full[0].ids.len() > 3, "the reference decode must run several steps: {:?}", full[0].ids);

    // Set during the third token's callback: decode stops before the next forward pass.
    engine.kv.reset();
    let mut row = [engine.kv.reserve(ids.len() + 64).unwrap()];
    engine.prefill(&mut row, &[&ids], true).unwrap();
    let mut seen = 0;
    let stopper = flag.clone();
    let r = engine.decode(&mut row, &greedy, 16, |_, _, _| {
        seen += 1;
        if seen == 3 {
            stopper.store(true, Ordering::SeqCst);
        }
    });
    match r {
        Err(Error::Interrupted(m)) => assert!(m.contains("3 generated tokens"), "{m}"),
        other => panic!("decode with the flag set must stop with Interrupted, got {other:?}"),
    }
    assert_eq!(seen, 3, "no token after the abort");
    assert_eq!(row[0].len, ids.len() + 2, "the two tokens fed before the abort are in the cache, not the third");

    // The latent steps stop too, before their first forward pass.
    let before = row[0].len;
    match engine.latent_steps(&mut row, 4, &align, |_, _| {}) {
        Err(Error::Interrupted(m)) => assert!(m.contains("latent step 1 of 4"), "{m}"),
        other => panic!("latent steps with the flag set must stop with Interrupted, got {other:?}"),
    }
    assert_eq!(row[0].len, before, "no latent step ran");

    // Cleared, the engine works again and gives the reference answer.
    flag.store(false, Ordering::SeqCst);
    engine.kv.reset();
    let mut row = [engine.kv.reserve(ids.len() + 64).unwrap()];
    engine.prefill(&mut row, &[&ids], true).unwrap();
    let again = engine.decode(&mut row, &greedy, 16, |_, _, _| {}).unwrap();
    assert_eq!(again[0].ids, full[0].ids);
}
