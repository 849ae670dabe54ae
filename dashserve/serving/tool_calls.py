"""Qwen tool calls: validate ``tools``, parse ``<tool_call>`` blocks out of model text (as a
stream), and build the grammars that force a call.

Qwen writes each call as ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``;
text outside the blocks is ordinary content. Blank space just before a block, after the last
block, or between blocks is dropped; blank space between a block and later text is kept.
``ToolCallParser`` streams a call as soon as its name is known: the first fragment carries
the id and name, later fragments only argument text, and the fragments of one call
concatenate to exactly the final ``arguments`` string (the model's own JSON text). A block
whose name never appeared in the expected place is parsed whole when it closes (keys in
another order still work); if that fails, the block is returned as content, tags and all.
A call cut off inside its arguments (``max_tokens``) stays a call: its fragments are already
out. ``ToolCall.complete`` says whether it closed with valid JSON.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import InvalidRequest
from dashserve.sampling.structured import JSON_OPTIONS

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_HEADER_RE = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_MAX_HEADER_CHARS = 512
_OUTSIDE, _HEADER, _ARGS, _AFTER_ARGS = "outside", "header", "args", "after_args"


@dataclass(slots=True)
class ToolCallFragment:
    """One piece of one call for a stream chunk: ``id``/``name`` only on the call's first piece."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class ToolCallDelta:
    content: str = ""
    fragments: list[ToolCallFragment] = field(default_factory=list)


@dataclass(slots=True)
class ToolCall:
    index: int
    id: str
    name: str
    arguments: str = ""
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI/DashScope ``tool_calls`` entry."""
        return {"index": self.index, "id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class _ValueScanner:
    """Finds where one JSON value ends in streamed text (strings, nesting, escapes)."""

    def __init__(self) -> None:
        self.kind = ""  # "" before the value, then "container" | "string" | "scalar"
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.done = False

    def scan(self, text: str) -> tuple[str, int]:
        """(value text found in ``text``, chars consumed). Stops at the value's end, or before
        a possible end tag outside a string (then ``consumed < len(text)`` and not done)."""
        out, i = [], 0
        while i < len(text) and not self.done:
            c = text[i]
            if not self.kind and c.isspace():
                i += 1
                continue
            if c == "<" and not self.in_string and TOOL_CALL_END.startswith(text[i:i + len(TOOL_CALL_END)]):
                break  # the block ends (or may end) here: the value is cut short
            if not self._step(c):
                break  # a scalar ended before c
            out.append(c)
            i += 1
        return "".join(out), i

    def _step(self, c: str) -> bool:
        if not self.kind:
            self.kind = "container" if c in "{[" else "string" if c == '"' else "scalar"
            self.depth, self.in_string = int(c in "{["), c == '"'
            return True
        if self.in_string:
            if self.escape:
                self.escape = False
            elif c == "\\":
                self.escape = True
            elif c == '"':
                self.in_string = False
                self.done = self.kind == "string"
            return True
        if self.kind == "scalar":
            if c.isspace() or c in ",}]":
                self.done = True
                return False
            return True
        if c == '"':
            self.in_string = True
        elif c in "{[":
            self.depth += 1
        elif c in "}]":
            self.depth -= 1
            self.done = self.depth == 0
        return True


class ToolCallParser:
    """Incremental: ``feed(text)`` / ``flush()`` -> ``ToolCallDelta``; ``calls`` lists every call."""

    def __init__(self, id_factory: Callable[[], str] = new_call_id) -> None:
        self._new_id = id_factory
        self._state = _OUTSIDE
        self._buf = ""
        self._after_call = False  # just after a block: blank space is held
        self._emitted = False  # some content was emitted
        self._scanner = _ValueScanner()
        self._calls: list[ToolCall] = []

    @property
    def calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> ToolCallDelta:
        self._buf += text
        delta = ToolCallDelta()
        while self._advance(delta):
            pass
        return delta

    def flush(self) -> ToolCallDelta:
        """End of output: settle the open block and release held-back text."""
        delta = ToolCallDelta()
        while self._advance(delta):
            pass
        buf, self._buf = self._buf, ""
        if self._state == _OUTSIDE:
            if not self._after_call:
                delta.content += buf
            elif buf.strip():
                self._emit(buf, delta)
        elif self._state == _HEADER:
            self._close_unrecognized(buf, delta)
        elif self._state == _ARGS:
            self._calls[-1].complete = False
        else:
            self._finish_call(buf)
        self._state = _OUTSIDE
        return delta

    # ---- states ---------------------------------------------------------------------------

    def _advance(self, delta: ToolCallDelta) -> bool:
        """One state step over the buffer; True when the state changed (run again)."""
        if self._state == _OUTSIDE:
            return self._step_outside(delta)
        if self._state == _HEADER:
            return self._step_header(delta)
        if self._state == _ARGS:
            return self._step_args(delta)
        end = self._buf.find(TOOL_CALL_END)
        if end < 0:
            return False
        self._finish_call(self._buf[:end])
        self._buf = self._buf[end + len(TOOL_CALL_END):]
        return True

    def _step_outside(self, delta: ToolCallDelta) -> bool:
        start = self._buf.find(TOOL_CALL_START)
        if start >= 0:
            text, self._buf = self._buf[:start].rstrip(), self._buf[start + len(TOOL_CALL_START):]
            self._state = _HEADER
        else:
            keep = _partial_suffix(self._buf, TOOL_CALL_START)
            text = self._buf[: len(self._buf) - keep].rstrip()  # blank space may precede a block
            self._buf = self._buf[len(text):]
        self._emit(text, delta)
        return start >= 0

    def _emit(self, text: str, delta: ToolCallDelta) -> None:
        if self._after_call and not self._emitted:
            text = text.lstrip()
        if text:
            delta.content += text
            self._emitted, self._after_call = True, False

    def _step_header(self, delta: ToolCallDelta) -> bool:
        # a header is short (names have at most 64 chars): look at the first chars only
        match = _HEADER_RE.match(self._buf[:_MAX_HEADER_CHARS])
        if match is not None:
            try:
                name = json.loads(f'"{match.group(1)}"')
            except json.JSONDecodeError:
                name = match.group(1)
            call = ToolCall(len(self._calls), self._new_id(), name)
            self._calls.append(call)
            _add_fragment(delta, call, call.id, name, "")
            self._buf = self._buf[match.end():]
            self._state, self._scanner = _ARGS, _ValueScanner()
            return True
        end = self._buf.find(TOOL_CALL_END)
        if end < 0:
            return False
        block, self._buf = self._buf[:end], self._buf[end + len(TOOL_CALL_END):]
        self._close_unrecognized(block, delta, closed=True)
        self._state = _OUTSIDE
        return True

    def _step_args(self, delta: ToolCallDelta) -> bool:
        call = self._calls[-1]
        text, used = self._scanner.scan(self._buf)
        self._buf = self._buf[used:]
        if text:
            call.arguments += text
            _add_fragment(delta, call, None, None, text)
        if self._scanner.done:
            self._state = _AFTER_ARGS
            return True
        if self._buf.startswith(TOOL_CALL_END):  # the block closed inside the value
            self._buf = self._buf[len(TOOL_CALL_END):]
            self._state, self._after_call = _OUTSIDE, True
            return True
        return False

    def _finish_call(self, tail: str) -> None:
        call = self._calls[-1]
        call.complete = tail.strip() == "}" and _parses(call.arguments)
        self._state, self._after_call = _OUTSIDE, True

    def _close_unrecognized(self, block: str, delta: ToolCallDelta, closed: bool = False) -> None:
        """A block without the usual header: a call if it parses whole, else content."""
        try:
            obj = json.loads(block)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and "arguments" in obj:
            args = obj["arguments"]
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            call = ToolCall(len(self._calls), self._new_id(), obj["name"], text, complete=True)
            self._calls.append(call)
            _add_fragment(delta, call, call.id, call.name, text)
            self._after_call = True
            return
        self._after_call = False
        self._emit(TOOL_CALL_START + block + (TOOL_CALL_END if closed else ""), delta)


def _add_fragment(delta: ToolCallDelta, call: ToolCall, id_: str | None, name: str | None, args: str) -> None:
    """Append to this delta's fragment of ``call`` (one fragment per call per delta)."""
    last = delta.fragments[-1] if delta.fragments else None
    if last is not None and last.index == call.index:
        last.arguments += args
        return
    delta.fragments.append(ToolCallFragment(call.index, id_, name, args))


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a whole output, by the same rules as ``ToolCallParser``."""
    parser = ToolCallParser()
    first, last = parser.feed(text), parser.flush()
    return first.content + last.content, parser.calls


# ---- tools validation and forced calls -----------------------------------------------------


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """Check a ``tools`` array (OpenAI/DashScope rules) and return normalised copies:
    ``{"type": "function", "function": {"name", "description"?, "parameters"}}`` where
    ``parameters`` is always an object schema (``{}`` or missing means "no arguments", made
    explicit with ``additionalProperties: false``), and a
    ``required`` list misplaced beside ``parameters`` is moved into it."""
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest("tools must be a non-empty array of tool objects", param="tools")
    seen: set[str] = set()
    out = [_validate_tool(tool, i, seen) for i, tool in enumerate(tools)]
    return out


def _validate_tool(tool: Any, i: int, seen: set[str]) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise InvalidRequest(f"{where} must be an object", param="tools")
    if tool.get("type", "function") != "function":
        raise InvalidRequest(f"{where}.type must be 'function', got {tool.get('type')!r}",
                             param="tools")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise InvalidRequest(f"{where}.function must be an object", param="tools")
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidRequest(
            f"{where}.function.name must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name!r}",
            param="tools")
    if name in seen:
        raise InvalidRequest(f"{where}.function.name {name!r} is used by two tools", param="tools")
    seen.add(name)
    if "description" in fn and fn["description"] is not None and not isinstance(fn["description"], str):
        raise InvalidRequest(f"{where}.function.description must be a string", param="tools")
    fn = copy.deepcopy(fn)
    fn["parameters"] = _parameters(fn, where)
    fn.pop("required", None)
    return {"type": "function", "function": fn}


def _parameters(fn: dict[str, Any], where: str) -> dict[str, Any]:
    params = fn.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest(f"{where}.function.parameters must be a JSON schema object",
                             param="tools")
    if params.get("type", "object") != "object":
        raise InvalidRequest(f"{where}.function.parameters must have type 'object'", param="tools")
    params = {"type": "object", **params}
    if len(params) == 1:  # no arguments at all: the only valid call passes {}
        params.update(properties={}, additionalProperties=False)
    misplaced = fn.get("required")
    if misplaced is not None and "required" not in params:
        if not isinstance(misplaced, list) or not all(isinstance(r, str) for r in misplaced):
            raise InvalidRequest(f"{where}.function.required must be an array of strings",
                                 param="tools")
        params["required"] = misplaced
    return params


def _call_rules(i: int, tool: dict[str, Any]) -> list[str]:
    """Lark for one call's JSON: the fixed name, then arguments under the tool's schema."""
    fn = tool["function"]
    schema = {**(fn.get("parameters") or {"type": "object"}), "x-guidance": JSON_OPTIONS}
    head = json.dumps('{"name": ' + json.dumps(fn["name"]) + ', "arguments": ')
    return [f'call_{i}: {head} args_{i} "}}"', f"args_{i}: %json {json.dumps(schema)}"]


def _call_grammar(tools: list[dict[str, Any]]) -> str:
    choice = " | ".join(f"call_{i}" for i in range(len(tools)))
    start = f'start: "{TOOL_CALL_START}" "\\n" ({choice}) "\\n" "{TOOL_CALL_END}"'
    return "\n".join([start, *(rule for i, tool in enumerate(tools) for rule in _call_rules(i, tool))])


def forced_tool_call_spec(tool: dict[str, Any]) -> StructuredOutputSpec:
    """Force exactly one call of ``tool`` (a validated tools entry): ``<tool_call>\\n{"name":
    "<name>", "arguments": <JSON valid under its parameters>}\\n</tool_call>``, then the end."""
    return StructuredOutputSpec(grammar=_call_grammar([tool]))


def tool_choice_required_spec(tools: list[dict[str, Any]]) -> StructuredOutputSpec:
    """Force exactly one call of any of ``tools`` (``tool_choice: "required"``)."""
    return StructuredOutputSpec(grammar=_call_grammar(tools))
