"""Chat features of one request: thinking mode, tools, structured output, and how they combine.

``resolve_features`` checks ``tools``/``tool_choice``, ``response_format`` and
``enable_thinking`` against each other and the model profile, refusing what DashScope
refuses (forced tool calls in thinking mode, partial mode with thinking, a ``json_object``
request whose messages never mention JSON), and says what the prompt, the engine and the
output parser must do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import InvalidRequest, UnsupportedFeature
from dashserve.serving.ocr import OcrTask, parse_ocr_options
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import GenerationRequest
from dashserve.serving.tool_calls import (
    forced_tool_call_spec,
    tool_choice_required_spec,
    validate_tools,
)

JSON_WORD_MESSAGE = ("'messages' must contain the word 'json' in some form, to use "
                     "'response_format' of type 'json_object'.")


@dataclass(frozen=True, slots=True)
class ChatFeatures:
    """What a request asks of the template, the engine and the output parser."""

    thinking: bool = False
    template_tools: tuple[dict[str, Any], ...] = ()  # normalised tools shown to the model
    parse_tools: bool = False  # run the output through the tool-call parser
    structured: StructuredOutputSpec | None = None
    ocr: OcrTask | None = None  # a built-in OCR task (its prompt replaces the user's text)


def thinking_enabled(requested: bool | None, profile: ModelProfile) -> bool:
    """Thinking is on when asked for (or by the profile's default) and the model can think."""
    wanted = profile.enable_thinking if requested is None else requested
    return bool(wanted) and profile.thinking is not None


def response_format_spec(request: GenerationRequest) -> StructuredOutputSpec | None:
    """The structured-output spec of ``response_format`` (None for text or absent)."""
    fmt = request.response_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        if not any("json" in m.content.lower() for m in request.messages):
            raise InvalidRequest(JSON_WORD_MESSAGE, param="response_format")
        return StructuredOutputSpec(json_object=True)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
                or not spec["name"]:
            raise InvalidRequest("response_format.json_schema.name is required",
                                 param="response_format")
        schema = spec.get("schema")
        if schema is None:
            return StructuredOutputSpec(json_object=True)
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be a JSON schema "
                                 "object", param="response_format")
        return StructuredOutputSpec(json_schema=schema)
    raise InvalidRequest("response_format.type must be one of 'text', 'json_object', "
                         "'json_schema'", param="response_format")


def _forced_name(choice: Any) -> str:
    fn = choice.get("function") if choice.get("type", "function") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest('tool_choice must be "auto", "none" or {"type": "function", '
                             '"function": {"name": ...}}', param="tool_choice")
    return name


def _tool_features(request: GenerationRequest, thinking: bool) -> ChatFeatures:
    """Tools for the template, whether to parse calls, and the grammar of a forced call."""
    choice = request.tool_choice
    if not request.tools:  # tool_choice alone has no effect
        return ChatFeatures(thinking=thinking)
    tools = validate_tools(list(request.tools))
    if choice is None or choice == "auto":
        return ChatFeatures(thinking, tuple(tools), True)
    if choice == "none":
        return ChatFeatures(thinking)
    if thinking and (choice == "required" or isinstance(choice, dict)):
        raise InvalidRequest("thinking mode does not support forcing a tool call "
                             "(tool_choice)", param="tool_choice")
    if choice == "required":
        return ChatFeatures(thinking, tuple(tools), True, tool_choice_required_spec(tools))
    if not isinstance(choice, dict):
        raise InvalidRequest('tool_choice must be "auto", "none" or {"type": "function", '
                             '"function": {"name": ...}}', param="tool_choice")
    name = _forced_name(choice)
    tool = next((t for t in tools if t["function"]["name"] == name), None)
    if tool is None:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools",
                             param="tool_choice")
    return ChatFeatures(thinking, tuple(tools), True, forced_tool_call_spec(tool))


def resolve_features(request: GenerationRequest, profile: ModelProfile) -> ChatFeatures:
    """Check the chat features of ``request`` together; see the module docstring."""
    thinking = thinking_enabled(request.params.enable_thinking, profile)
    if thinking and request.messages and request.messages[-1].partial:
        raise InvalidRequest("partial mode cannot be used with thinking mode "
                             "(enable_thinking)", param="messages")
    structured = response_format_spec(request)
    if request.tools and not profile.tools:  # seed 002: no tools on qwen-vl models
        raise UnsupportedFeature(f"tools are not supported by the model {request.model!r}",
                                 param="tools")
    features = _tool_features(request, thinking)
    if structured is not None and features.structured is not None:
        raise InvalidRequest("response_format cannot be combined with a forced tool call",
                             param="response_format")
    if thinking and not request.stream:
        # seed 003: Qwen3 commercial models in thinking mode answer only as a stream
        raise InvalidRequest("The thinking mode (enable_thinking) only supports stream output; "
                             "enable streaming (X-DashScope-SSE: enable, or stream: true)",
                             param="enable_thinking")
    ocr = parse_ocr_options(request.ocr_options, request.model)
    if ocr is not None and structured is not None:
        raise InvalidRequest("response_format cannot be combined with ocr_options",
                             param="response_format")
    if ocr is not None:
        structured = ocr.structured
    if structured is None and ocr is None:
        return features
    return ChatFeatures(thinking, features.template_tools, features.parse_tools,
                        structured or features.structured, ocr)
