"""EngineRequest: the one typed object a request crosses into the engine as."""

from __future__ import annotations

from dataclasses import dataclass

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One request as serving hands it to the engine (``EngineClient.submit``,
    ``LLMEngine.add_request``).

    ``request_id`` is unique among the engine's running requests; ``prompt_token_ids`` the
    whole prompt (chat template applied, placeholders for images in place), which the engine
    copies and never changes; ``params`` how it samples; ``mm_inputs`` the images and videos
    placed in the prompt, each filling its placeholder tokens (empty for text).
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    mm_inputs: tuple[MultiModalInput, ...] = ()
