//! The server's answers against the engine run in-process on the same model (tests/data/tiny-trained):
//! greedy plain chat, streamed and not, and the three methods; and the errors a bad request gets.

mod common;

use std::path::Path;

use common::{collect_stream, tiny_trained, Server};
use engine::engine::Engine;
use engine::kv::KvBudget;
use engine::latent::Alignment;
use engine::mas::method::{Family, Method, Topology};
use engine::mas::prompts::PromptSet;
use engine::mas::run::{run_batch, RunConfig, REFERENCE_CONTEXT_LENGTH};
use engine::sample::SamplingParams;
use engine::tokenizer::ChatMessage;
use serde_json::{json, Value};

/// Greedy plain chat in-process: (generated text, prompt tokens, generated tokens).
fn engine_chat(model: &Path, messages: &[(&str, &str)], max_new: usize) -> (String, usize, usize) {
    let mut engine = Engine::open(model, KvBudget::Tokens(4096)).unwrap();
    let msgs: Vec<ChatMessage> =
        messages.iter().map(|(r, c)| ChatMessage { role: r.to_string(), content: c.to_string() }).collect();
    let text = engine.tokenizer.render_messages(&msgs, None).unwrap();
    let ids = engine.tokenizer.encode(&text).unwrap();
    let mut row = [engine.kv.reserve(ids.len() + max_new).unwrap()];
    engine.prefill(&mut row, &[&ids], true).unwrap();
    let out = engine.decode(&mut row, &SamplingParams::greedy(), max_new, |_, _, _| {}).unwrap();
    (engine.tokenizer.decode(&out[0].ids, true).unwrap(), ids.len(), out[0].ids.len())
}

/// A greedy multi-agent run in-process: its report as JSON.
fn engine_run(model: &Path, method: Method, topology: Topology, m: usize, max_new: usize, q: &str) -> Value {
    let mut engine = Engine::open(model, KvBudget::Tokens(4096)).unwrap();
    let align = Alignment::load_or_compute(&engine.model, model, engine.vocab_limit(), false).unwrap().0;
    let cfg = RunConfig {
        method,
        topology,
        family: Family::Math,
        latent_steps: m,
        think: false,
        compat_reference: false,
        sampling: SamplingParams::greedy(),
        max_new_tokens: max_new,
        text_mas_context_length: REFERENCE_CONTEXT_LENGTH,
    };
    let align = (method == Method::Latent).then_some(&align);
    let out = run_batch(&mut engine, &PromptSet::builtin(), align, &cfg, &[q.to_string()]).unwrap();
    serde_json::to_value(&out.reports[0]).unwrap()
}

fn chat_body(messages: &[(&str, &str)], max_tokens: usize) -> Value {
    let msgs: Vec<Value> = messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
    json!({"model": "tiny-trained", "messages": msgs, "temperature": 0, "max_tokens": max_tokens})
}

#[test]
fn greedy_chat_equals_the_engine_in_process_and_the_stream_concatenates_to_it() {
    let model = tiny_trained();
    let server = Server::start(&model, &["--kv-budget", "4096tok"]);
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "tiny-trained", "{models}");
    let (status, health) = server.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")), "{health}");

    let conversation =
        [("system", "You are terse."), ("user", "What is 2 plus 3?"), ("assistant", "5"), ("user", "And 4 plus 4?")];
    let (want, prompt_tokens, generated) = engine_chat(&model, &conversation, 24);
    let mut body = chat_body(&conversation, 24);
    let (status, got) = server.post(&body);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["object"], "chat.completion");
    assert_eq!(got["choices"][0]["message"]["role"], "assistant");
    assert_eq!(got["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(got["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(got["usage"]["completion_tokens"], generated);
    assert_eq!(got["usage"]["total_tokens"], prompt_tokens + generated);
    let finish = if generated < 24 { "stop" } else { "length" };
    assert_eq!(got["choices"][0]["finish_reason"], finish);

    // max_completion_tokens is the same limit; content parts are joined text
    body["max_completion_tokens"] = json!(24);
    body["messages"][1]["content"] = json!([{"type": "text", "text": "What is 2 plus 3?"}]);
    let (status, again) = server.post(&body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["choices"][0]["message"]["content"], want.as_str());

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let data = server.stream(&body);
    let (text, chunks) = collect_stream(&data);
    assert_eq!(text, want);
    assert!(chunks.len() > 3, "the text arrives in several chunks: {chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk comes last: {last}");
    assert_eq!(last["usage"]["completion_tokens"], generated);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
}

#[test]
fn the_three_methods_answer_as_the_engine_does() {
    let model = tiny_trained();
    let server = Server::start(&model, &["--kv-budget", "4096tok"]);
    let q = "What is 2 plus 3?";
    // single is plain chat
    let (want, _, _) = engine_chat(&model, &[("user", q)], 16);
    let mut body = chat_body(&[("user", q)], 16);
    body["method"] = json!("single");
    let (status, got) = server.post(&body);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["message"]["content"], want.as_str());
    assert!(got.get("latentmas").is_none());

    for (method, topology, m) in [
        (Method::Latent, Topology::Sequential, 3),
        (Method::Latent, Topology::Hierarchical, 2),
        (Method::Latent, Topology::Parallel, 2),
        (Method::Text, Topology::Sequential, 0),
    ] {
        let report = engine_run(&model, method, topology, m, 12, q);
        let mut body = chat_body(&[("user", q)], 12);
        body["method"] = json!(method.as_str());
        body["topology"] = json!(topology.as_str());
        body["task_family"] = json!("math");
        if method == Method::Latent {
            body["latent_steps"] = json!(m);
        }
        let what = format!("{method} {topology}");
        let (status, got) = server.post(&body);
        assert_eq!(status, 200, "{what}: {got}");
        assert_eq!(got["choices"][0]["message"]["content"], report["text"], "{what}");
        let ext = &got["latentmas"];
        assert_eq!(ext["agents"].as_array().map(Vec::len), Some(4), "{what}: {ext}");
        assert_eq!(ext["totals"]["latent_steps"], report["totals"]["latent_steps"], "{what}");
        assert_eq!(ext["answer"], report["answer"], "{what}");
        assert_eq!(got["usage"]["prompt_tokens"], report["totals"]["prompt_tokens"], "{what}");
        assert_eq!(got["usage"]["completion_tokens"], report["totals"]["generated_tokens"], "{what}");

        body["stream"] = json!(true);
        let (text, chunks) = collect_stream(&server.stream(&body));
        assert_eq!(text, report["text"].as_str().unwrap(), "{what}: streamed");
        let last = chunks.last().unwrap();
        assert_eq!(last["latentmas"]["agents"].as_array().map(Vec::len), Some(4), "{what}: {last}");
    }
}

/// Posts `body` and checks a 4xx in OpenAI's error shape whose message contains `needle`.
fn refused(server: &Server, body: &str, status: u16, needle: &str) -> Value {
    let (got, v) = server.post_raw(body);
    assert_eq!(got, status, "{body} -> {v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| m.contains(needle)), "{body}: {needle:?} not in {e}");
    assert!(e["type"].is_string(), "{v}");
    for key in ["param", "code"] {
        assert!(e.as_object().unwrap().contains_key(key), "{key} in {v}");
    }
    v
}

#[test]
fn bad_requests_are_openai_shaped_errors_that_name_the_problem() {
    let model = tiny_trained();
    let server = Server::start(&model, &["--kv-budget", "600tok"]);
    let ok = |extra: Value| {
        let mut b = chat_body(&[("user", "What is 2 plus 3?")], 4);
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    refused(&server, "{\"model\": \"tiny-trained\", \"messages\": [", 400, "not valid JSON");
    refused(&server, "[]", 400, "JSON object");
    refused(&server, &ok(json!({"max_tokens": "four"})), 400, "max_tokens");
    refused(&server, &ok(json!({"n": 2})), 400, "n = 2");
    refused(&server, &ok(json!({"tools": [{"type": "function"}]})), 400, "tool");
    refused(&server, &ok(json!({"stop": ["\n"]})), 400, "stop");
    refused(&server, &ok(json!({"frobnicate": true})), 400, "frobnicate");
    refused(&server, &ok(json!({"messages": [{"role": "wizard", "content": "hi"}]})), 400, "wizard");
    refused(&server, &ok(json!({"messages": [{"role": "tool", "content": "hi"}]})), 400, "tool");
    refused(&server, &ok(json!({"messages": []})), 400, "at least one message");
    refused(&server, &ok(json!({"temperature": 3})), 400, "temperature");
    refused(&server, &ok(json!({"top_p": 0})), 400, "top_p");
    refused(&server, &ok(json!({"method": "telepathy"})), 400, "telepathy");
    refused(&server, &ok(json!({"method": "text", "latent_steps": 3})), 400, "latent_steps");
    refused(&server, &ok(json!({"method": "text", "topology": "parallel"})), 400, "parallel");
    refused(&server, &ok(json!({"latent_steps": 3})), 400, "multi-agent");
    refused(
        &server,
        &ok(
            json!({"method": "latent", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}),
        ),
        400,
        "one user message",
    );
    refused(&server, &ok(json!({"model": "gpt-4o"})), 404, "gpt-4o");
    // limits: the prompt, the prompt with max_tokens, and a run larger than the KV buffer
    let long = "word ".repeat(400);
    let v = refused(&server, &ok(json!({"messages": [{"role": "user", "content": long}]})), 400, "600 tokens");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    refused(&server, &ok(json!({"max_tokens": 590})), 400, "max_tokens = 590");
    let v = refused(&server, &ok(json!({"method": "latent", "max_tokens": 64})), 400, "--kv-budget");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // streamed requests are refused the same way, before any event
    refused(&server, &ok(json!({"stream": true, "max_tokens": 590})), 400, "max_tokens = 590");
    let (status, v) = server.get("/v1/nothing");
    assert_eq!(status, 404, "{v}");

    // none of it reached the engine, which answers the next request
    let (status, v) = server.post_raw(&ok(json!({})));
    assert_eq!(status, 200, "{v}");
    let (_, health) = server.get("/health");
    assert_eq!(health["requests"]["completed"], 1, "{health}");
    assert_eq!(health["requests"]["failed"], 0, "{health}");
}
