"""The demo checkpoint's random weights end their answers on their own; plain checkpoints do not
get the circuit."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.model import demo_weights
from dashserve.model.make import make_model

PROMPTS = ("你是谁？", "What is the capital of France?", "Tell me a joke.", "hi", "写一首诗",
           "List three colors.")


def _chat(engine: LLMEngine, text: str) -> list[int]:
    return engine.tokenizer.encode(
        f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def _lengths(model_dir: Path, max_tokens: int) -> dict[str, tuple[int, FinishReason]]:
    engine = LLMEngine(EngineConfig(model=str(model_dir), dtype="fp32", max_model_len=512))
    for i, text in enumerate(PROMPTS):  # the qwen-plus defaults, two seeds
        for seed in (1234, 7):
            params = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, seed=seed,
                                    repetition_penalty=1.05, max_tokens=max_tokens)
            engine.add_request(EngineRequest(f"{i}-{seed}", _chat(engine, text), params))
    counts: dict[str, int] = {}
    done: dict[str, tuple[int, FinishReason]] = {}
    while engine.has_unfinished():
        for ev in engine.step():
            counts[ev.request_id] = counts.get(ev.request_id, 0) + len(ev.token_ids)
            if ev.finished:
                done[ev.request_id] = (counts[ev.request_id], ev.finish_reason)
    return done


def test_demo_answers_end_on_their_own(tmp_path: Path) -> None:
    demo = make_model("qwen3-tiny", tmp_path / "demo", seed=0, demo_max_new_tokens=100)
    done = _lengths(demo, max_tokens=300)
    stopped = [n for n, reason in done.values() if reason is FinishReason.STOP]
    assert len(stopped) == len(done), done  # every sampled answer ends on its own
    assert all(1 <= n < 300 for n in stopped)
    assert len(set(stopped)) > 1  # where it ends depends on the text


def test_plain_checkpoints_have_no_circuit(tmp_path: Path) -> None:
    plain = make_model("qwen3-tiny", tmp_path / "plain", seed=0)
    demo = make_model("qwen3-tiny", tmp_path / "demo", seed=0, demo_max_new_tokens=100)
    again = make_model("qwen3-tiny", tmp_path / "again", seed=0, demo_max_new_tokens=100)
    assert (demo / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    with safe_open(str(plain / "model.safetensors"), "pt") as p, \
            safe_open(str(demo / "model.safetensors"), "pt") as d:
        differ = {name for name in p.keys() if not p.get_tensor(name).equal(d.get_tensor(name))}
        norm = d.get_tensor("model.norm.weight")
    assert differ == {"model.embed_tokens.weight", "model.norm.weight",
                      "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                      "model.layers.1.mlp.down_proj.weight"}
    assert norm[demo_weights.MARK] == 0
