"""dashserve: a self-hosted DashScope-compatible model service with its own inference engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dashserve.contracts.params import SamplingParams, StructuredOutputSpec

if TYPE_CHECKING:
    from dashserve.llm import LLM

__all__ = ["LLM", "SamplingParams", "StructuredOutputSpec"]


def __getattr__(name: str) -> Any:
    # LLM pulls in torch; keep `import dashserve` light for the CLI and tools.
    if name == "LLM":
        from dashserve.llm import LLM

        return LLM
    raise AttributeError(name)
