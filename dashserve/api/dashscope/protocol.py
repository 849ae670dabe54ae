"""Native request shapes: ``{"model", "input": {messages | prompt}, "parameters": {...}}``.

Shapes only. Unknown keys are kept and ignored (the SDK forwards any unknown keyword
into ``parameters``), so new client versions keep working. Responses are built as plain
dicts in ``convert.py`` because their shape depends on result_format and streaming.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator


class NativeModel(BaseModel):
    """Base of the native shapes: unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class NativeMessage(NativeModel):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    partial: StrictBool | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class NativeInput(NativeModel):
    messages: list[NativeMessage] | None = None
    prompt: str | None = None
    history: list[dict[str, str]] | None = None  # deprecated [{"user": .., "bot": ..}]


class NativeParameters(NativeModel):
    result_format: Literal["text", "message"] | None = None
    incremental_output: StrictBool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    stop: str | list[str] | list[int] | list[list[int]] | None = None
    n: int | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = None
    enable_thinking: StrictBool | None = None
    thinking_budget: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    enable_search: StrictBool | None = None
    search_options: dict[str, Any] | None = None
    vl_high_resolution_images: StrictBool | None = None
    vl_enable_image_hw_output: StrictBool | None = None
    ocr_options: Any = None  # checked by serving.ocr
    asr_options: Any = None  # checked by serving.asr
    stream: bool | None = None  # ignored: the X-DashScope-SSE header decides


class NativeRequest(NativeModel):
    model: str = Field(min_length=1)
    input: NativeInput | None = None
    parameters: NativeParameters = Field(default_factory=NativeParameters)

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_parameters(cls, value: Any) -> Any:
        return {} if value is None else value
