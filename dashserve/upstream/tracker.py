"""One request's output over an upstream, turned into the engine's events.

With token ids (vLLM, SGLang, llama.cpp) the front does what its own engine does per token:
detokenize with stop-string hold-back, end on stop token ids, count reasoning and answer
tokens, end an answer at ``max_tokens`` after a thinking block, and spot a spent
``thinking_budget`` (the endpoint then closes the block and continues in a second request).
Only text (the ``openai`` kind): the text passes through and the counts come from the
upstream's usage.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.engine.detokenize import IncrementalDetokenizer
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import Chunk


@dataclass(frozen=True, slots=True)
class ThinkIds:
    """The thinking block's markers in this tokenizer (None: the model has none)."""

    start: int | None
    end: int | None
    close: tuple[int, ...]  # what the engine forces once thinking_budget is spent

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> ThinkIds:
        end = tokenizer.token_to_id("</think>")
        close = tuple(tokenizer.encode("\n</think>\n\n")) if end is not None else ()
        return cls(tokenizer.token_to_id("<think>"), end, close)


class OutputTracker:
    """Feeds upstream chunks in, gives EngineEvents out; ``finish_reason`` once it ended."""

    def __init__(self, request_id: str, tokenizer: Tokenizer, params: SamplingParams,
                 num_prompt_tokens: int, think: ThinkIds) -> None:
        self.request_id = request_id
        self.params = params
        skip = tokenizer.special_ids if params.skip_special_tokens else frozenset()
        self._detok = IncrementalDetokenizer(tokenizer.id_to_bytes, skip, params.stop)
        self._stop_ids = frozenset((*params.stop_token_ids, *tokenizer.stop_token_ids))
        self._think = think
        self._in_thinking = params.starts_in_thinking
        # in thinking mode max_tokens bounds the answer alone, as in the engine
        self._answer_limit = params.max_tokens if params.starts_in_thinking else None
        self.num_prompt_tokens = num_prompt_tokens
        self.num_cached_tokens = 0
        self.num_output_tokens = 0
        self.num_reasoning_tokens = 0
        self._num_answer_tokens = 0
        self._seen_ids = 0
        self._seen_text = 0
        self.output_ids: list[int] = []  # every output token so far (continuations resend them)
        self._leg_base = 0  # output tokens before the current upstream request
        self.budget_spent = False  # thinking_budget reached inside the block: close it next
        self.upstream_finish: FinishReason | None = None  # what the upstream said
        self.local_finish: FinishReason | None = None  # the front ended it (stop, limit)
        self.has_output = False

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.local_finish or self.upstream_finish

    def feed(self, chunk: Chunk) -> EngineEvent | None:
        """The event for this chunk (None when it carries nothing new)."""
        if chunk.num_cached_tokens is not None and self._leg_base == 0:
            self.num_cached_tokens = chunk.num_cached_tokens
        if chunk.finish_reason is not None:
            self.upstream_finish = chunk.finish_reason
        if chunk.token_ids is not None:
            token_ids, text = self._feed_ids(chunk)
        else:
            token_ids, text = self._feed_text(chunk)
        if not token_ids and not text:
            return None
        self.has_output = True
        return self._event(token_ids, text)

    def _feed_ids(self, chunk: Chunk) -> tuple[list[int], str]:
        ids = chunk.token_ids or []
        if chunk.is_cumulative:
            ids = ids[self._seen_ids:]
        self._seen_ids += len(ids)
        taken: list[int] = []
        for token in ids:
            taken.append(token)
            if self._push(token) or self.budget_spent:
                break
        if (chunk.num_output_tokens is not None and self.local_finish is None and chunk.is_last
                and not self.budget_spent):
            self.num_output_tokens = self._leg_base + chunk.num_output_tokens  # upstream's count
        return taken, self._detok.take(final=self.local_finish is not None)

    def _push(self, token: int) -> bool:
        """One output token; True once the front ends the request on it."""
        self.num_output_tokens += 1
        self.output_ids.append(token)
        self._track_thinking(token)
        if token in self._stop_ids:
            self.local_finish = FinishReason.STOP
            return True
        self._detok.push(token)
        if self._detok.stopped:
            self.local_finish = FinishReason.STOP
        elif self._answer_limit is not None and self._num_answer_tokens >= self._answer_limit:
            self.local_finish = FinishReason.LENGTH
        return self.local_finish is not None

    def _track_thinking(self, token: int) -> None:
        if self._in_thinking:
            self.num_reasoning_tokens += 1
            if token == self._think.end:
                self._in_thinking = False
            elif (self.params.thinking_budget is not None
                  and self.num_reasoning_tokens >= self.params.thinking_budget):
                self.budget_spent = True
        elif token == self._think.start and self.num_output_tokens == 1:
            self._in_thinking = True
            self.num_reasoning_tokens += 1
        else:
            self._num_answer_tokens += 1

    def close_thinking(self) -> EngineEvent:
        """Append the forced end of the thinking block (counted as neither reasoning nor
        answer, as in the engine) and start counting a new upstream request."""
        close_ids = list(self._think.close)
        for token in close_ids:
            self.num_output_tokens += 1
            self.output_ids.append(token)
            if token == self._think.end:
                self._in_thinking = False
            self._detok.push(token)
        self.budget_spent = False
        self._leg_base = self.num_output_tokens
        self._seen_ids = self._seen_text = 0
        return self._event(close_ids, self._detok.take())

    def _feed_text(self, chunk: Chunk) -> tuple[list[int], str]:
        text = chunk.text
        if chunk.is_cumulative:
            text = text[self._seen_text:]
        self._seen_text += len(text)
        if chunk.num_prompt_tokens is not None:
            self.num_prompt_tokens = chunk.num_prompt_tokens  # the upstream tokenized it
        if chunk.num_output_tokens is not None:
            self.num_output_tokens = chunk.num_output_tokens
        elif text:
            self.num_output_tokens += 1  # about one token per chunk until usage arrives
        return [], text

    def final(self) -> EngineEvent:
        """The request's last event: the rest of the text, final counts, finished."""
        text = self._detok.take(final=True)
        event = self._event([], text)
        event.finish_reason = self.finish_reason
        event.finished = True
        return event

    def _event(self, token_ids: list[int], text: str) -> EngineEvent:
        return EngineEvent(
            request_id=self.request_id, index=0, token_ids=token_ids, text=text,
            finish_reason=None, num_prompt_tokens=self.num_prompt_tokens,
            num_output_tokens=self.num_output_tokens,
            num_cached_tokens=min(self.num_cached_tokens, self.num_prompt_tokens),
            num_reasoning_tokens=self.num_reasoning_tokens,
        )
