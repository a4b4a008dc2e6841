//! Starting the real `latentmas-server` binary on a free port, and a blocking client for it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_trained() -> PathBuf {
    repo().join("tests/data/tiny-trained")
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    /// What the server wrote on stderr is left in this file (shown when a test fails).
    log: PathBuf,
}

impl Server {
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("latentmas-server-test-{}-{n}.log", std::process::id()));
        let err = std::fs::File::create(&log).expect("create the server's log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_latentmas-server"))
            .arg("--model")
            .arg(model)
            .args(["--port", "0", "--threads", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start latentmas-server");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("read the address");
        let url = first.trim().to_string();
        if !url.starts_with("http://") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not print its address: {url:?}; stderr: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Server { child, url, log }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the server to exit.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(sent.success());
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            assert!(t.elapsed() < limit, "the server did not exit after SIGTERM\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        reply(agent().get(&format!("{}{path}", self.url)).call())
    }

    pub fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(&body.to_string())
    }

    pub fn post_raw(&self, body: &str) -> (u16, Value) {
        reply(
            agent()
                .post(&format!("{}/v1/chat/completions", self.url))
                .set("Content-Type", "application/json")
                .send_string(body),
        )
    }

    /// A streamed completion read to its end: the `data:` payloads in order (the last is `[DONE]`).
    pub fn stream(&self, body: &Value) -> Vec<String> {
        let mut s = self.open_stream(body);
        let mut out = Vec::new();
        while let Some(d) = s.next_data() {
            out.push(d);
        }
        out
    }

    /// Opens a streamed completion; 200 is expected.
    pub fn open_stream(&self, body: &Value) -> SseReader {
        let r = agent()
            .post(&format!("{}/v1/chat/completions", self.url))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("stream request failed: {e}"));
        assert_eq!(r.content_type(), "text/event-stream");
        SseReader { lines: BufReader::new(r.into_reader()) }
    }

    /// `GET /health` until `done` holds for it, up to `limit`.
    pub fn wait_health(&self, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let (_, h) = self.get("/health");
            if done(&h) {
                return h;
            }
            assert!(t.elapsed() < limit, "health never reached the state waited for: {h}\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build()
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).expect("read the body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {text:?}"));
    (status, v)
}

/// The `data:` payloads of a stream, one at a time.
pub struct SseReader {
    lines: BufReader<Box<dyn Read + Send + Sync + 'static>>,
}

impl SseReader {
    pub fn next_data(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(d) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                return Some(d.trim_end_matches(['\r', '\n']).to_string());
            }
        }
    }
}

/// The text of a stream's content deltas, and its chunks (without `[DONE]`), checking the frame: a role
/// chunk first, one chunk with a finish reason, `[DONE]` last.
pub fn collect_stream(data: &[String]) -> (String, Vec<Value>) {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "a stream ends with [DONE]: {data:?}");
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("a chunk is JSON")).collect();
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "no error in the stream: {chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes =
        chunks.iter().filter(|c| c["choices"].get(0).is_some_and(|ch| !ch["finish_reason"].is_null())).count();
    assert_eq!(finishes, 1, "exactly one chunk carries the finish reason: {chunks:?}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str()).map(str::to_string))
        .collect::<String>();
    (text, chunks)
}

/// A random-weight model with Qwen3's real tokenizer and vocabulary: its lm_head makes each token take a
/// few milliseconds and its greedy text never meets a stop token soon, so a long decode lasts long enough to
/// be interrupted. Removed when dropped.
pub struct SlowModel {
    pub dir: PathBuf,
}

impl SlowModel {
    pub fn make(name: &str) -> SlowModel {
        let dir = std::env::temp_dir().join(format!("latentmas-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = engine::model::synth::shape("tiny").unwrap();
        cfg.hidden_size = 128;
        cfg.intermediate_size = 256;
        cfg.max_position_embeddings = 8192;
        engine::model::synth::write_checkpoint(&cfg, engine::model::synth::SynthDtype::Bf16, 7, &dir)
            .expect("write the slow model");
        SlowModel { dir }
    }
}

impl Drop for SlowModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
