"""OpenAI-compatible wire ↔ serving: chat requests in, completions and chunks out.

Stream rules (protocol.md §9.3): every chunk has the same ``id``/``created``/``model``;
``role`` appears only in the first delta of each choice (the openai stream helper
concatenates repeated strings); ``finish_reason`` is JSON null until the end; with
``stream_options.include_usage`` one last chunk has ``choices: []`` and the usage; the
stream ends with ``data: [DONE]``.

Web search sources (``search_options.enable_source``) travel as a top-level
``search_info`` object: in the ``chat.completion`` body, and in the stream on the first
chunk (with ``prepend_search_result``, alone in a first chunk with ``choices: []``).
"""

from __future__ import annotations

from typing import Any

from dashserve.api.common import (
    given,
    logprobs_content,
    merged_tool_calls,
    stop_items,
    to_message,
    tool_call_chunks,
)
from dashserve.api.errors import openai_error_body
from dashserve.api.openai.protocol import ChatCompletionRequest
from dashserve.api.sse import OPENAI_DONE, openai_event
from dashserve.errors import DashServeError, UnsupportedFeature
from dashserve.inspection.header import InspectionRequest
from dashserve.serving.assemble import Completion, GenerationUpdate, Usage
from dashserve.serving.normalize import EXTRA_NAMES, check_extras
from dashserve.serving.request import GenerationRequest, RequestedParams


def to_generation_request(body: ChatCompletionRequest, *, request_id: str,
                          resolve_oss: bool = False,
                          inspection: InspectionRequest | None = None) -> GenerationRequest:
    values = given(body, (*EXTRA_NAMES, "asr_options", "ocr_options"))
    check_extras(values)
    if values["asr_options"] is not None:
        raise UnsupportedFeature("asr_options is only available on the DashScope API "
                                 "(MultiModalConversation)", param="asr_options")
    if values["ocr_options"]:
        raise UnsupportedFeature("ocr_options is only available on the DashScope API "
                                 "(/api/v1/services/aigc/multimodal-generation/generation)",
                                 param="ocr_options")
    messages = tuple(
        to_message(m.role, m.content, f"messages[{i}]", partial=m.partial,
                   fields=m.model_dump(exclude_none=True))
        for i, m in enumerate(body.messages))
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None \
        else body.max_tokens
    params = RequestedParams(
        temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
        repetition_penalty=body.repetition_penalty, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, seed=body.seed, max_tokens=max_tokens,
        max_input_tokens=body.max_input_tokens, stop=stop_items(body.stop), n=body.n,
        logprobs=body.logprobs, top_logprobs=body.top_logprobs,
        enable_thinking=body.enable_thinking, thinking_budget=body.thinking_budget,
        vl_high_resolution_images=body.vl_high_resolution_images,
        vl_enable_image_hw_output=body.vl_enable_image_hw_output,
    )
    return GenerationRequest(
        request_id=request_id, model=body.model, messages=messages, params=params,
        stream=bool(body.stream), api="openai", tools=tuple(body.tools or ()),
        tool_choice=body.tool_choice, response_format=body.response_format,
        parallel_tool_calls=bool(body.parallel_tool_calls), resolve_oss=resolve_oss,
        enable_search=bool(body.enable_search), search_options=body.search_options,
        inspection=inspection or InspectionRequest(),
    )


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def openai_usage(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": usage.prompt_tokens_details(),
    }
    if usage.reasoning_tokens:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.image_hw is not None:
        body["image_hw"] = [list(hw) for hw in usage.image_hw]
    if usage.search_count:
        body["plugins"] = {"search": {"count": usage.search_count}}
    return body


def openai_body(completion: Completion, *, request_id: str, model: str, created: int,
                logprobs: bool, search_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The non-stream ``chat.completion`` object."""
    choices = []
    for c in completion.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.content}
        if c.reasoning_content:
            message["reasoning_content"] = c.reasoning_content
        if c.tool_calls:
            message["tool_calls"] = merged_tool_calls(c.tool_calls)
        choices.append({
            "index": c.index, "message": message, "finish_reason": c.finish_reason,
            "logprobs": {"content": logprobs_content(c.logprobs)} if logprobs else None,
        })
    body = {
        "id": completion_id(request_id), "object": "chat.completion", "created": created,
        "model": model, "choices": choices, "usage": openai_usage(completion.usage),
        "system_fingerprint": None, "request_id": request_id,
    }
    if search_info is not None:
        body["search_info"] = search_info
    return body


class OpenAIStreamRenderer:
    """Chunks of one ``chat.completion.chunk`` stream."""

    def __init__(self, *, request_id: str, model: str, created: int, logprobs: bool,
                 include_usage: bool, search_info: dict[str, Any] | None = None,
                 prepend: bool = False) -> None:
        self.request_id = request_id
        self.logprobs = logprobs
        self.include_usage = include_usage
        self.search_info = search_info  # sent once, on the first chunk
        self.prepend = prepend
        self._head = {"id": completion_id(request_id), "object": "chat.completion.chunk",
                      "created": created, "model": model, "system_fingerprint": None}
        self._started: set[int] = set()
        self._usage = Usage()

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        body = {**self._head, "choices": choices, "usage": usage}
        if self.search_info is not None:
            body["search_info"], self.search_info = self.search_info, None
        return openai_event(body)

    def start(self) -> list[bytes]:
        return [self._chunk([], None)] if self.prepend and self.search_info is not None else []

    def frames(self, update: GenerationUpdate) -> list[bytes]:
        self._usage = update.usage
        delta = update.delta
        first = delta.index not in self._started
        if not first and delta.is_empty:
            return []
        self._started.add(delta.index)
        body: dict[str, Any] = {"role": "assistant"} if first else {}
        body["content"] = delta.content
        if delta.reasoning_content:
            body["reasoning_content"] = delta.reasoning_content
        if delta.tool_calls:
            body["tool_calls"] = tool_call_chunks(delta.tool_calls)
        choice = {
            "index": delta.index, "delta": body, "finish_reason": delta.finish_reason,
            "logprobs": ({"content": logprobs_content(delta.logprobs)}
                         if self.logprobs and delta.logprobs else None),
        }
        return [self._chunk([choice], None)]

    def end(self) -> list[bytes]:
        frames = []
        if self.include_usage:
            frames.append(self._chunk([], openai_usage(self._usage)))
        frames.append(OPENAI_DONE)
        return frames

    def error(self, error: DashServeError) -> bytes:
        body: dict[str, Any] = openai_error_body(error, self.request_id)
        body["id"] = self._head["id"]
        return openai_event(body)
