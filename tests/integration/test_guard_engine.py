"""The guard provider on dashserve's own engine: a Qwen3-architecture preset classifies."""

from __future__ import annotations

from pathlib import Path

from dashserve.engine.async_engine import AsyncEngine
from dashserve.inspection.guard import GuardInspector
from dashserve.serving.registry import ModelRegistry


async def test_a_qwen3_preset_gives_a_verdict(qwen3_tiny_dir: Path) -> None:
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=1024)
    try:
        registry = ModelRegistry()
        registry.install({"guard": engine})
        guard = GuardInspector(registry, "guard", prompt="instruction",
                               block_controversial=True)
        verdicts = {await guard.classify(text) for text in ("hello", "a longer message here")}
        # random weights, but the grammar makes every answer a verdict
        assert verdicts <= {"Safe", "Unsafe", "Controversial"} and None not in verdicts
        blocked = await guard.blocked("hello", None)
        assert blocked == (await guard.classify("hello") != "Safe")
    finally:
        await engine.shutdown()
