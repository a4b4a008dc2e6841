"""The Python bindings against the CLI on the committed tiny-trained model (tests/data).

The CLI is the binary that `cargo build --release` made (LATENTMAS_CLI, default target/release/latentmas):
each method's report must equal `latentmas run --json`'s, token for token (greedy, same settings).
"""

import json
import os
import subprocess
import threading
import time
import _thread
from pathlib import Path

import numpy as np
import pytest

import latentmas

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests" / "data" / "tiny-trained")
CLI = os.environ.get("LATENTMAS_CLI", str(ROOT / "target" / "release" / "latentmas"))
QUESTION = "What is 12 plus 30?"


@pytest.fixture(scope="module")
def engine():
    return latentmas.Engine(TINY, threads=2)


def cli_json(*args):
    out = subprocess.run([CLI, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_generate_streams_the_clis_reply(engine):
    pieces = list(engine.generate(QUESTION, max_new_tokens=24))
    assert len(pieces) > 1, "a reply of several tokens arrives in several pieces"
    want = cli_json("generate", "--model", TINY, "--prompt", QUESTION, "--max-new-tokens", "24", "--greedy",
                    "--json", "--threads", "2")
    assert "".join(pieces).strip() == want["text"]


@pytest.mark.parametrize("method", ["single", "text", "latent"])
def test_run_equals_the_cli(engine, method):
    report = engine.run(QUESTION, method=method, latent_steps=3, greedy=True, max_new_tokens=24)
    steps = ["--latent-steps", "3"] if method == "latent" else []
    want = cli_json("run", "--model", TINY, "--method", method, *steps, "--greedy",
                    "--max-new-tokens", "24", "--question", QUESTION, "--json", "--threads", "2")
    assert report["text"] == want["text"]
    assert report["answer"] == want["answer"]
    got_agents = [(a["role"], a["prompt_tokens"], a["latent_steps"], a["generated_tokens"]) for a in report["agents"]]
    want_agents = [(a["role"], a["prompt_tokens"], a["latent_steps"], a["generated_tokens"]) for a in want["agents"]]
    assert got_agents == want_agents


def test_latents_come_back_as_arrays(engine):
    report = engine.run(QUESTION, method="latent", latent_steps=4, greedy=True, max_new_tokens=8, return_latents=True)
    thinkers = [a for a in report["agents"] if a["latent_steps"] > 0]
    assert [l["role"] for l in report["latents"]] == [a["role"] for a in thinkers]
    for l in report["latents"]:
        v = l["vectors"]
        assert v.dtype == np.float32 and v.shape == (4, 64)
        assert np.isfinite(v).all() and (np.linalg.norm(v, axis=1) > 0).all()
    # Not asked for: not there.
    assert "latents" not in engine.run(QUESTION, method="latent", latent_steps=1, greedy=True, max_new_tokens=4)


def test_errors_carry_the_engines_message(engine):
    with pytest.raises(latentmas.Error, match="no-such-model"):
        latentmas.Engine(str(ROOT / "no-such-model"))
    with pytest.raises(ValueError, match="method"):
        engine.run(QUESTION, method="telepathy")
    with pytest.raises(ValueError, match="top_p"):
        engine.run(QUESTION, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate(QUESTION, max_new_tokens=0)
    small = latentmas.Engine(TINY, kv_budget=16)
    with pytest.raises(latentmas.Error, match="kv_budget"):
        small.run(QUESTION, method="single", greedy=True, max_new_tokens=8)
    # The engine is still fine after each of them.
    assert engine.run(QUESTION, method="single", greedy=True, max_new_tokens=4)["text"] is not None


def test_keyboard_interrupt_stops_a_run_and_leaves_the_engine_usable(engine):
    reference = engine.run(QUESTION, method="latent", latent_steps=2, greedy=True, max_new_tokens=8)
    # 1000 latent steps per thinking agent take seconds on the tiny model: Ctrl-C (interrupt_main, what
    # the SIGINT handler does) arrives while the caller waits for the run.
    threading.Timer(0.2, _thread.interrupt_main).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        engine.run(QUESTION, method="latent", latent_steps=1000, greedy=True, max_new_tokens=8)
    assert time.monotonic() - start < 2, "the interrupt stopped the latent steps within a step, not at the end"
    again = engine.run(QUESTION, method="latent", latent_steps=2, greedy=True, max_new_tokens=8)
    assert again["text"] == reference["text"]


def test_keyboard_interrupt_in_a_streaming_loop(engine):
    reference = "".join(engine.generate(QUESTION, max_new_tokens=16))
    with pytest.raises(KeyboardInterrupt):
        for _ in engine.generate(QUESTION, max_new_tokens=16):
            _thread.interrupt_main()
    assert "".join(engine.generate(QUESTION, max_new_tokens=16)) == reference


def test_dropping_a_stream_early_frees_the_engine(engine):
    stream = engine.generate(QUESTION, max_new_tokens=3000, greedy=False, temperature=5.0, seed=3)
    next(stream)
    del stream
    # Would wait forever for the engine if the dropped stream's worker still held it.
    assert engine.run(QUESTION, method="single", greedy=True, max_new_tokens=4)["text"] is not None
