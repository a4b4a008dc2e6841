//! The server under load: a client that leaves mid-stream stops its decode and the next request is served
//! as if nothing happened; a full queue answers 429; requests that wait together are decoded together and
//! get the answers they get alone; SIGTERM stops the running request and exits. Both run on a random model with Qwen3's vocabulary,
//! whose long greedy decodes last seconds (see `common::SlowModel`).

mod common;

use std::time::Duration;

use common::{collect_stream, Server, SlowModel};
use serde_json::{json, Value};

const LONG: usize = 3000;

fn body(max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "slow",
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("no content in {v}")).to_string()
}

/// Reads a stream until it has shown `n` content pieces.
fn read_pieces(s: &mut common::SseReader, n: usize) {
    let mut seen = 0;
    while seen < n {
        let d = s.next_data().expect("the stream ended early");
        let c: Value = serde_json::from_str(&d).unwrap_or_else(|_| panic!("chunk {d:?}"));
        if c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
            seen += 1;
        }
    }
}

#[test]
fn a_client_leaving_mid_stream_stops_its_decode_and_the_next_request_is_served() {
    let model = SlowModel::make("disconnect");
    let server = Server::start(&model.dir, &["--kv-budget", "4096tok", "--served-model-name", "slow"]);
    let (status, before) = server.post(&body(8, false));
    assert_eq!(status, 200, "{before}");

    let mut s = server.open_stream(&body(LONG, true));
    read_pieces(&mut s, 3);
    drop(s);
    let h = server
        .wait_health(Duration::from_secs(60), |h| h["requests"]["aborted"] == 1 && h["queue"]["running"] == false);
    assert_eq!(h["requests"]["completed"], 1, "the long decode did not finish: {h}");

    let (status, after) = server.post(&body(8, false));
    assert_eq!(status, 200, "{after}");
    assert_eq!(content(&after), content(&before), "the engine answers as before the abort");
    // and a stream after it runs to its end
    let (text, _) = collect_stream(&server.stream(&body(8, true)));
    assert_eq!(text, content(&before));
}

#[test]
fn a_full_queue_answers_429_and_the_waiting_request_is_served() {
    let model = SlowModel::make("queue");
    let server =
        Server::start(&model.dir, &["--kv-budget", "4096tok", "--served-model-name", "slow", "--max-queue", "1"]);
    // A runs (its stream has started), B waits, C finds the queue full.
    let mut a = server.open_stream(&body(LONG, true));
    read_pieces(&mut a, 1);
    let b = std::thread::scope(|scope| {
        let b = scope.spawn(|| server.post(&body(4, false)));
        server.wait_health(Duration::from_secs(30), |h| h["queue"]["waiting"] == 1);
        let (status, c) = server.post(&body(4, false));
        assert_eq!(status, 429, "{c}");
        let msg = c["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("--max-queue 1"), "{c}");
        assert_eq!(c["error"]["type"], "rate_limit_error");
        drop(a);
        b.join().unwrap()
    });
    assert_eq!(b.0, 200, "{}", b.1);
    let h = server.wait_health(Duration::from_secs(30), |h| h["queue"]["running"] == false);
    assert_eq!(h["requests"]["aborted"], 1, "{h}");
    assert_eq!(h["requests"]["completed"], 1, "{h}");
}

#[test]
fn sigterm_stops_the_running_stream_with_an_error_and_the_server_exits() {
    let model = SlowModel::make("shutdown");
    let mut server = Server::start(&model.dir, &["--kv-budget", "4096tok", "--served-model-name", "slow"]);
    let mut s = server.open_stream(&body(LONG, true));
    read_pieces(&mut s, 1);
    let status = server.terminate(Duration::from_secs(60));
    let rest: Vec<String> = std::iter::from_fn(|| s.next_data()).collect();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let error = rest.iter().find(|d| d.contains("\"error\"")).unwrap_or_else(|| panic!("no error event: {rest:?}"));
    assert!(error.contains("shutting down"), "{error}");
    assert!(status.success(), "exit status {status}\n{}", server.stderr());
}

#[test]
fn a_client_leaving_before_a_non_streamed_answer_stops_its_decode() {
    let model = SlowModel::make("leave");
    let server = Server::start(&model.dir, &["--kv-budget", "4096tok", "--served-model-name", "slow"]);
    let impatient = ureq::AgentBuilder::new().timeout(Duration::from_millis(300)).build();
    let r = impatient
        .post(&format!("{}/v1/chat/completions", server.url))
        .set("Content-Type", "application/json")
        .send_string(&body(LONG, false).to_string());
    assert!(r.is_err(), "the client gives up before the answer");
    let h = server
        .wait_health(Duration::from_secs(60), |h| h["requests"]["aborted"] == 1 && h["queue"]["running"] == false);
    assert_eq!(h["requests"]["completed"], 0, "the long decode did not finish: {h}");
}

#[test]
fn waiting_chat_requests_decode_as_one_batch_with_the_answers_they_get_alone() {
    let model = SlowModel::make("batch");
    let server = Server::start(&model.dir, &["--kv-budget", "4096tok", "--served-model-name", "slow"]);
    let greedy = body(8, false);
    let mut sampled = body(12, false);
    sampled["messages"][0]["content"] = json!("Name three colours.");
    sampled["temperature"] = json!(0.8);
    sampled["seed"] = json!(5);
    let alone: Vec<String> = [&greedy, &sampled]
        .iter()
        .map(|b| {
            let (status, v) = server.post(b);
            assert_eq!(status, 200, "{v}");
            content(&v)
        })
        .collect();
    let (_, h) = server.get("/health");
    assert_eq!(h["requests"]["batched"], 0, "one at a time so far: {h}");

    // Both wait behind a long decode, so the worker finds them together when it ends.
    let mut a = server.open_stream(&body(LONG, true));
    read_pieces(&mut a, 1);
    let together = std::thread::scope(|scope| {
        let runs: Vec<_> = [&greedy, &sampled].into_iter().map(|b| scope.spawn(|| server.post(b))).collect();
        server.wait_health(Duration::from_secs(30), |h| h["queue"]["waiting"] == 2);
        drop(a);
        runs.into_iter().map(|r| r.join().unwrap()).collect::<Vec<_>>()
    });
    for ((status, v), want) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(&content(v), want, "a request answers in a batch as it does alone");
    }
    let h = server.wait_health(Duration::from_secs(30), |h| h["queue"]["running"] == false);
    assert_eq!(h["requests"]["batched"], 2, "the two ran as one batch: {h}");
    assert_eq!(h["requests"]["completed"], 4, "{h}");
}
