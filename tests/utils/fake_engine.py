"""FakeEngine: an EngineClient with scripted output, delays, failures and an abort log.

Each sample emits the words of ``script`` (sample i > 0 is prefixed with ``"[i]"``), one
word per event, then an end-of-sequence event. ``max_tokens``, stop strings and stop
token ids end a sample the way the real engine does (stop text is never emitted). With
``vision`` (e.g. ``FAKE_VISION``) it reports a vision encoder and records the ``mm_inputs``
each submission carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from dashserve.contracts.engine_client import ModelInfo, VisionInfo
from dashserve.contracts.outputs import (
    EngineEvent,
    EngineStats,
    FinishReason,
    TokenLogprob,
    TopLogprob,
)
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import PromptTooLong
from tests.utils.fake_tokenizer import SPECIAL_IDS, VOCAB_SIZE, FakeTokenizer

DEFAULT_SCRIPT = ("Hello", " from", " dash", "serve", "!")
# A Qwen3-VL-like vision encoder on the fake tokenizer's placeholder tokens.
FAKE_VISION = VisionInfo(
    family="qwen3-vl", patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
    image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
    image_token_id=SPECIAL_IDS["<|image_pad|>"], video_token_id=SPECIAL_IDS["<|video_pad|>"],
    vision_start_token_id=SPECIAL_IDS["<|vision_start|>"],
    vision_end_token_id=SPECIAL_IDS["<|vision_end|>"])


@dataclass
class _Sample:
    index: int
    pieces: list[str]
    finish: FinishReason
    ends_on_piece: bool = False  # the last piece carries the finish (length, stop string)
    emitted: int = 0


class FakeEngine:
    """Implements ``dashserve.contracts.engine_client.EngineClient`` for tests."""

    def __init__(self, *, script: Sequence[str] = DEFAULT_SCRIPT, token_delay_s: float = 0.0,
                 first_token_delay_s: float = 0.0, fail_after: int | None = None,
                 fail_with: BaseException | None = None, max_model_len: int = 4096,
                 cached_tokens: int = 0, name: str = "fake-model",
                 architecture: str = "Qwen3ForCausalLM",
                 vision: VisionInfo | None = None) -> None:
        self.script = list(script)
        self.token_delay_s = token_delay_s
        self.first_token_delay_s = first_token_delay_s
        self.fail_after = fail_after
        self.fail_with = fail_with or RuntimeError("boom: the fake engine failed")
        self.cached_tokens = cached_tokens
        self.tokenizer = FakeTokenizer()
        self.model_info = ModelInfo(name, architecture, max_model_len, VOCAB_SIZE, vision)
        self.submissions: list[EngineRequest] = []  # every request, as submitted
        self.aborted: list[str] = []
        self.completed: list[str] = []
        self.active: set[str] = set()
        self.is_shut_down = False

    def _sample(self, index: int, params: SamplingParams) -> _Sample:
        pieces = ([f"[{index}]"] if index else []) + list(self.script)
        finish = FinishReason.STOP
        for k, piece in enumerate(pieces):
            if self.tokenizer.word_id(piece) in params.stop_token_ids:
                pieces, finish = pieces[:k], FinishReason.STOP
                break
        text = "".join(pieces)
        cut = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
        ends_on_piece = False
        if cut >= 0:
            kept, used, ends_on_piece = [], 0, True
            for piece in pieces:
                if used + len(piece) > cut:
                    if cut > used:
                        kept.append(piece[: cut - used])
                    break
                kept.append(piece)
                used += len(piece)
            pieces = kept
        if params.max_tokens is not None and len(pieces) >= params.max_tokens:
            pieces, finish = pieces[: params.max_tokens], FinishReason.LENGTH
            ends_on_piece = True
        return _Sample(index, pieces, finish, ends_on_piece and bool(pieces))

    def _logprobs(self, token_id: int, piece: str, params: SamplingParams) -> list[TokenLogprob]:
        top = [TopLogprob(token_id, piece, list(piece.encode()), -0.25)]
        top += [TopLogprob(7 + k, chr(65 + k), [65 + k], -2.0 - k)
                for k in range(params.top_logprobs - 1)]
        return [TokenLogprob(token_id, piece, list(piece.encode()), -0.25,
                             top[: params.top_logprobs])]

    async def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]:
        self.submissions.append(request)
        request_id, prompt_token_ids, params = (request.request_id, request.prompt_token_ids,
                                                request.params)
        if len(prompt_token_ids) >= self.model_info.max_model_len:
            raise PromptTooLong("the prompt does not fit the fake engine", param="input")
        self.active.add(request_id)
        finished = False
        try:
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            async for event in self._events(request_id, len(prompt_token_ids), params):
                finished = event.finished
                yield event
        finally:
            self.active.discard(request_id)
            (self.completed if finished else self.aborted).append(request_id)

    async def _events(self, request_id: str, num_prompt: int,
                      params: SamplingParams) -> AsyncIterator[EngineEvent]:
        samples = [self._sample(i, params) for i in range(params.n)]
        running = list(samples)
        count = 0
        while running:
            for sample in list(running):
                if self.fail_after is not None and count >= self.fail_after:
                    raise self.fail_with
                if count and self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                count += 1
                yield self._step(request_id, sample, num_prompt, params, running)

    def _step(self, request_id: str, sample: _Sample, num_prompt: int,
              params: SamplingParams, running: list[_Sample]) -> EngineEvent:
        if sample.emitted < len(sample.pieces):
            piece = sample.pieces[sample.emitted]
            sample.emitted += 1
            token_ids = [self.tokenizer.word_id(piece)]
            last = sample.emitted == len(sample.pieces) and sample.ends_on_piece
            logprobs = self._logprobs(token_ids[0], piece, params) if params.logprobs else None
        else:  # the end-of-sequence token: no text
            piece, token_ids, last, logprobs = "", [self.tokenizer.eos_token_id], True, None
            sample.emitted += 1
        if last:
            running.remove(sample)
        return EngineEvent(
            request_id=request_id, index=sample.index, token_ids=token_ids, text=piece,
            finish_reason=sample.finish if last else None, num_prompt_tokens=num_prompt,
            num_output_tokens=sample.emitted, num_cached_tokens=self.cached_tokens,
            logprobs=logprobs, finished=last and not running,
        )

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(num_waiting=0, num_running=len(self.active), num_kv_blocks_total=64,
                           num_kv_blocks_free=64 - len(self.active))

    async def shutdown(self) -> None:
        self.is_shut_down = True
