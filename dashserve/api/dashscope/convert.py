"""Native wire ↔ serving: request → GenerationRequest; completions and updates → bodies/chunks.

Rendering rules (protocol.md §6-7): every success body has ``output``; message-format
choices always carry ``role``; stream chunks carry ``usage`` (running totals) and the
``request_id``; ``finish_reason`` is the string ``"null"`` until a choice ends. With
``incremental_output`` true a chunk holds what is new, otherwise the whole text so far.
On the multimodal path ``content`` is a list of ``{"text": ...}`` parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dashserve.api.common import (
    given,
    logprobs_content,
    merged_tool_calls,
    stop_items,
    to_message,
    tool_call_chunks,
)
from dashserve.api.dashscope.protocol import NativeInput, NativeParameters, NativeRequest
from dashserve.api.sse import native_error_event, native_event
from dashserve.errors import DashServeError, InvalidRequest, MissingInput
from dashserve.inspection.header import InspectionRequest
from dashserve.search.prompt import EMPTY_SEARCH_INFO
from dashserve.serving.asr import AsrOptions, annotation, parse_answer, parse_asr_options
from dashserve.serving.assemble import ChoiceState, Completion, GenerationUpdate, Usage
from dashserve.serving.features import thinking_enabled
from dashserve.serving.normalize import EXTRA_NAMES, check_extras
from dashserve.serving.ocr import parse_ocr_options
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import GenerationRequest, Message, RequestedParams


def native_messages(inp: NativeInput | None) -> tuple[Message, ...]:
    """``input.messages`` (+ ``input.prompt`` as a last user turn), or ``history`` + prompt."""
    if inp is None or (not inp.messages and inp.prompt is None):
        raise MissingInput('Either "prompt" or "messages" must exist and cannot both be none.',
                           param="input")
    messages: list[Message] = []
    for turn in inp.history or ():
        if "user" in turn:
            messages.append(Message("user", turn["user"]))
        if "bot" in turn:
            messages.append(Message("assistant", turn["bot"]))
    for i, m in enumerate(inp.messages or ()):
        fields = m.model_dump(exclude_none=True)
        messages.append(to_message(m.role, m.content, f"input.messages[{i}]",
                                   partial=m.partial, fields=fields))
    if inp.prompt is not None:
        messages.append(Message("user", inp.prompt))
    return tuple(messages)


def requested_params(p: NativeParameters) -> RequestedParams:
    return RequestedParams(
        temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
        repetition_penalty=p.repetition_penalty, presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty, seed=p.seed, max_tokens=p.max_tokens,
        max_input_tokens=p.max_input_tokens, stop=stop_items(p.stop), n=p.n,
        logprobs=p.logprobs, top_logprobs=p.top_logprobs, enable_thinking=p.enable_thinking,
        thinking_budget=p.thinking_budget,
        vl_high_resolution_images=p.vl_high_resolution_images,
        vl_enable_image_hw_output=p.vl_enable_image_hw_output,
    )


def to_generation_request(body: NativeRequest, *, request_id: str, stream: bool,
                          resolve_oss: bool = False,
                          inspection: InspectionRequest | None = None) -> GenerationRequest:
    params = body.parameters
    check_extras(given(params, EXTRA_NAMES))
    return GenerationRequest(
        request_id=request_id, model=body.model, messages=native_messages(body.input),
        params=requested_params(params), stream=stream, api="dashscope",
        tools=tuple(params.tools or ()), tool_choice=params.tool_choice,
        parallel_tool_calls=bool(params.parallel_tool_calls),
        response_format=params.response_format, resolve_oss=resolve_oss,
        enable_search=bool(params.enable_search),
        search_options=params.search_options, inspection=inspection or InspectionRequest(),
        ocr_options=params.ocr_options, asr_options=params.asr_options,
    )


@dataclass(frozen=True, slots=True)
class NativeView:
    """How one request's answer is rendered."""

    result_format: str  # "text" | "message"
    incremental: bool
    multimodal: bool
    n: int
    logprobs: bool
    ocr: Callable[[str], Any] | None = None  # an OCR task's parser: the answer → ocr_result
    # speech recognition (its asr_options): transcript content and an audio_info annotation
    asr: AsrOptions | None = None


def native_view(params: NativeParameters, profile: ModelProfile, multimodal: bool,
                stream: bool = False, model: str = "") -> NativeView:
    """Result format and stream mode: the request's values over the profile's defaults.

    Tools and thinking mode need ``result_format`` "message"; thinking streams need
    ``incremental_output`` true (DashScope refuses the other combinations). An OCR task
    (``ocr_options``) answers content parts with its ``ocr_result``.
    """
    task = parse_ocr_options(params.ocr_options, model)
    asr = parse_asr_options(params.asr_options) if profile.family == "qwen3-asr" else None
    multimodal = multimodal or task is not None or asr is not None
    thinking = thinking_enabled(params.enable_thinking, profile)
    default_fmt = "message" if thinking and params.enable_thinking is None \
        else profile.result_format
    # The multimodal path and vision models answer messages (seed 002: "text" has no effect).
    fmt = "message" if multimodal or profile.pixels is not None \
        else (params.result_format or default_fmt)
    incremental = (profile.incremental_output if params.incremental_output is None
                   else params.incremental_output)
    if fmt == "text" and params.tools:
        raise InvalidRequest("tools need result_format 'message'", param="result_format")
    if fmt == "text" and thinking:
        raise InvalidRequest("thinking mode (enable_thinking) needs result_format 'message'",
                             param="result_format")
    if stream and thinking and not incremental:
        raise InvalidRequest("thinking mode (enable_thinking) streams need incremental_output "
                             "true", param="incremental_output")
    n = 1 if params.tools else (params.n or 1)
    if fmt == "text" and n > 1:
        raise InvalidRequest("n > 1 needs result_format 'message'", param="n")
    if fmt == "text" and params.logprobs:
        raise InvalidRequest("logprobs needs result_format 'message'", param="logprobs")
    return NativeView(fmt, incremental, multimodal, n, bool(params.logprobs),
                      task.parse if task is not None else None, asr)


def native_usage(usage: Usage, output_tokens: int | None = None) -> dict[str, Any]:
    out = usage.output_tokens if output_tokens is None else output_tokens
    if usage.audio_seconds:  # speech recognition reports seconds and text tokens (seed 001)
        return {"input_tokens_details": {"text_tokens": usage.context_tokens},
                "output_tokens_details": {"text_tokens": out}, "seconds": usage.audio_seconds}
    body: dict[str, Any] = {"input_tokens": usage.input_tokens, "output_tokens": out,
                            "total_tokens": usage.input_tokens + out}
    if usage.cached_tokens or usage.explicit_cache:
        body["prompt_tokens_details"] = usage.prompt_tokens_details()
    if usage.reasoning_tokens:
        body["output_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.image_tokens or usage.video_tokens or usage.audio_tokens:
        details = {"text_tokens": usage.text_tokens}
        if usage.audio_tokens:  # audio understanding (the clips' placeholder tokens)
            details["audio_tokens"] = usage.audio_tokens
            body["audio_tokens"] = usage.audio_tokens
        if usage.image_tokens:
            details["image_tokens"] = usage.image_tokens
            body["image_tokens"] = usage.image_tokens
        if usage.video_tokens:
            details["video_tokens"] = usage.video_tokens
            body["video_tokens"] = usage.video_tokens
        body["input_tokens_details"] = details
    if usage.search_count:
        body["plugins"] = {"search": {"count": usage.search_count}}
    return body


def with_image_hw(body: dict[str, Any], usage: Usage) -> dict[str, Any]:
    """``usage.image_hw``: each image's [height, width] after resizing (when asked for)."""
    if usage.image_hw is not None:
        body["image_hw"] = [list(hw) for hw in usage.image_hw]
    return body


def _parts(view: NativeView, content: str, finish: str | None,
           whole: str | None) -> list[dict[str, Any]]:
    """Multimodal content: the text part, with an OCR task's ``ocr_result`` (parsed from
    the whole answer, ``whole``) once the choice is finished."""
    part: dict[str, Any] = {"text": content} if content else {}
    if view.ocr is not None and finish not in (None, "null"):
        result = view.ocr(content if whole is None else whole)
        if result is not None:
            part = {"text": content, "ocr_result": result}
    return [part] if part else []


def _choice(view: NativeView, index: int, content: str, reasoning: str, logprobs: list[Any],
            finish: str | None, tool_calls: list[dict[str, Any]] | None = None,
            whole: str | None = None) -> dict[str, Any]:
    language: str | None = None
    if view.asr:  # the transcript, without the model's "language ...<asr_text>" prefix
        transcript, language = parse_answer(content if whole is None else whole,
                                            view.asr.language, finish not in (None, "null"),
                                            view.asr.enable_itn)
        content = transcript if whole is None else content
    message: dict[str, Any] = {"role": "assistant",
                               "content": _parts(view, content, finish, whole)
                               if view.multimodal else content}
    if view.asr:
        message["annotations"] = annotation(language if view.asr.enable_lid else None)
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"finish_reason": finish, "message": message}
    if view.n > 1:
        choice["index"] = index
    if view.logprobs:
        choice["logprobs"] = {"content": logprobs_content(logprobs)}
    return choice


def native_body(completion: Completion, view: NativeView, request_id: str,
                search_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The non-stream response body (``finish_reason`` null for unfinished choices);
    ``search_info`` goes in ``output`` when sources were asked for."""
    if view.result_format == "text":
        first = completion.choices[0]
        output: dict[str, Any] = {"text": first.content, "finish_reason": first.finish_reason}
    else:
        output = {"choices": [
            _choice(view, c.index, c.content, c.reasoning_content, c.logprobs, c.finish_reason,
                    merged_tool_calls(c.tool_calls))
            for c in completion.choices]}
    if search_info is not None:
        output["search_info"] = search_info
    usage = with_image_hw(native_usage(completion.usage), completion.usage)
    return {"output": output, "usage": usage, "request_id": request_id}


class NativeStreamRenderer:
    """Frames of one native SSE stream (``id:`` counts from 1).

    With ``search_info`` every frame's ``output`` carries it; with ``prepend`` the first
    frame holds only the sources (empty content, ``usage: {}``) and later frames an empty
    ``search_info``.
    """

    def __init__(self, view: NativeView, request_id: str, *, status_line: bool = True,
                 search_info: dict[str, Any] | None = None, prepend: bool = False) -> None:
        self.view = view
        self.request_id = request_id
        self.status_line = status_line
        self.search_info = search_info
        self.prepend = prepend and search_info is not None
        self._next_id = 1
        self._asr_sent: dict[int, int] = {}  # transcript characters sent, per choice

    def start(self) -> list[bytes]:
        if not self.prepend:
            return []
        assert self.search_info is not None
        if self.view.result_format == "text":
            output: dict[str, Any] = {"text": "", "finish_reason": "null"}
        else:
            output = {"choices": [_choice(self.view, 0, "", "", [], "null")]}
        output["search_info"] = self.search_info
        frame = self._frame({"output": output, "usage": {}, "request_id": self.request_id})
        self.search_info = EMPTY_SEARCH_INFO
        return [frame]

    def _frame(self, data: dict[str, Any]) -> bytes:
        frame = native_event(self._next_id, data)
        self._next_id += 1
        return frame

    def frames(self, update: GenerationUpdate) -> list[bytes]:
        delta, state = update.delta, update.choice
        if self.view.incremental and delta.is_empty and not update.is_last:
            return []
        if self.view.incremental:
            content, reasoning, logprobs = delta.content, delta.reasoning_content, delta.logprobs
            calls = tool_call_chunks(delta.tool_calls)
        else:
            content, reasoning, logprobs = state.content, state.reasoning_content, state.logprobs
            calls = merged_tool_calls(state.tool_calls)
        finish = delta.finish_reason or "null"
        if self.view.asr:  # stream the transcript only
            transcript, _ = parse_answer(state.content, self.view.asr.language,
                                         finish != "null", self.view.asr.enable_itn)
            sent = self._asr_sent.get(state.index, 0)
            content = transcript[sent:] if self.view.incremental else transcript
            self._asr_sent[state.index] = len(transcript)
        # With n > 1 each chunk carries one choice and that choice's output tokens.
        usage = native_usage(update.usage, state.num_output_tokens if self.view.n > 1 else None)
        if update.is_last:  # the resized image sizes come in the last chunk
            with_image_hw(usage, update.usage)
        if self.view.result_format == "text":
            output: dict[str, Any] = {"text": content, "finish_reason": finish}
        else:
            output = {"choices": [_choice(self.view, state.index, content, reasoning, logprobs,
                                          finish, calls, state.content)]}
        if self.search_info is not None:
            output["search_info"] = self.search_info
        return [self._frame({"output": output, "usage": usage, "request_id": self.request_id})]

    def end(self) -> list[bytes]:
        return []

    def error(self, error: DashServeError) -> bytes:
        frame = native_error_event(self._next_id, error.status_code, error.code, error.message,
                                   self.request_id, status_line=self.status_line)
        self._next_id += 1
        return frame


def unfinished(choices: list[ChoiceState]) -> bool:
    return any(not c.is_finished for c in choices)
