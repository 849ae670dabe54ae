"""OpenAI-compatible request shapes (Chat Completions), with DashScope's extra body fields.

Shapes only; unknown fields are accepted and ignored, as the compatible mode does.
DashScope extras arrive top-level (the openai SDK merges ``extra_body`` into the body):
``top_k``, ``repetition_penalty``, ``enable_thinking``, ``thinking_budget``,
``enable_search``, ``search_options``, ``max_input_tokens`` and others.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(OpenAIModel):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    partial: StrictBool | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(OpenAIModel):
    include_usage: StrictBool | None = None


class ChatCompletionRequest(OpenAIModel):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | list[int] | list[list[int]] | None = None
    n: int | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    # DashScope extras
    top_k: int | None = None
    repetition_penalty: float | None = None
    enable_thinking: StrictBool | None = None
    thinking_budget: int | None = None
    max_input_tokens: int | None = None
    enable_search: StrictBool | None = None
    search_options: dict[str, Any] | None = None
    vl_high_resolution_images: StrictBool | None = None
    vl_enable_image_hw_output: StrictBool | None = None
