"""Messages → prompt token ids, through the model's own chat template.

Partial mode: a final assistant message with ``partial: true`` is not closed by the
template; its text is appended after the generation prompt, so the model continues it.
Client text is encoded as plain text: special tokens typed in any message, tool result,
tool call or tool definition never become control tokens (only the template's own do).
Thinking mode: when the rendered prompt does not already end inside an open ``<think>``
block, ``<think>\n`` is appended, so the output always starts inside the reasoning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dashserve.contracts.chat_format import opens_thinking
from dashserve.errors import InvalidRequest, MissingInput
from dashserve.serving.request import Message

if TYPE_CHECKING:
    from dashserve.tokenizer import Tokenizer

ROLES = frozenset({"system", "user", "assistant", "tool"})
CACHE_MARK = "\x00dashserve-cache-mark\x00"  # located in the rendered prompt, then removed


def check_messages(messages: Sequence[Message]) -> None:
    """Roles are known; only the last message, an assistant one, may be partial."""
    if not messages:
        raise MissingInput('Either "prompt" or "messages" must exist and cannot both be none.',
                           param="messages")
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, user, assistant, tool; "
                f"got {message.role!r}", param="messages")
        if message.partial and (i != len(messages) - 1 or message.role != "assistant"):
            raise InvalidRequest("only the last message, from the assistant, may be partial",
                                 param="messages")
        if message.role == "system" and message.content.startswith("fileid://"):
            raise InvalidRequest("fileid:// documents are not available on this server yet",
                                 param="messages")


def client_text(value: Any, escape: Callable[[str], str], key: str | None = None) -> Any:
    """``value`` with every string the client wrote escaped (all but a message's role)."""
    if isinstance(value, str):
        return value if key == "role" else escape(value)
    if isinstance(value, dict):
        return {k: client_text(v, escape, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [client_text(v, escape) for v in value]
    return value


def render_prompt(tokenizer: Tokenizer, messages: Sequence[Message], *,
                  enable_thinking: bool, tools: Sequence[dict[str, Any]] | None = None) -> str:
    """The prompt text the model sees, with the client's text escaped (``escape_added``):
    encode it with ``tokenizer.encode_prompt``."""
    check_messages(messages)
    last = messages[-1]
    history = messages[:-1] if last.partial else messages
    escape = tokenizer.escape_added
    text = tokenizer.apply_chat_template(
        [client_text(m.to_template(), escape) for m in history],
        tools=[client_text(t, escape) for t in tools] if tools else None,
        add_generation_prompt=True, enable_thinking=enable_thinking,
    )
    if last.partial:
        text += escape(last.content)
    elif enable_thinking:
        text = opens_thinking(text)
    return text


def build_prompt(tokenizer: Tokenizer, messages: Sequence[Message], *,
                 enable_thinking: bool, tools: Sequence[dict[str, Any]] | None = None
                 ) -> list[int]:
    """Prompt token ids for ``messages`` (the count billed as input tokens)."""
    text = render_prompt(tokenizer, messages, enable_thinking=enable_thinking, tools=tools)
    return tokenizer.encode_prompt(text)


def _with_mark(message: Message, cut: int) -> Message:
    """``message`` with the cache mark at ``cut`` in its text (after the text part that
    reaches it when the message also holds images)."""
    text = message.content[:cut] + CACHE_MARK + message.content[cut:]
    if not message.parts:
        return dataclasses.replace(message, content=text)
    parts = list(message.parts)
    seen = 0
    for i, part in enumerate(parts):
        if isinstance(part, str):
            if cut <= seen + len(part):
                parts[i] = part[:cut - seen] + CACHE_MARK + part[cut - seen:]
                break
            seen += len(part)
    return dataclasses.replace(message, content=text, parts=tuple(parts))


def explicit_cache_tokens(tokenizer: Tokenizer, messages: Sequence[Message],
                          prompt_ids: Sequence[int], *, enable_thinking: bool,
                          tools: Sequence[dict[str, Any]] | None = None) -> int:
    """How many leading prompt tokens the last ``cache_control`` marker covers (0: none).

    The conversation is rendered again with a mark at the marker's position; the tokens of
    the text before the mark that agree with the real prompt are the cached prefix.
    """
    marked = [i for i, m in enumerate(messages) if m.cache_until is not None]
    if not marked:
        return 0
    i = marked[-1]
    m = messages[i]
    cut = m.cache_until or 0
    with_mark = _with_mark(m, cut)
    text = render_prompt(tokenizer, [*messages[:i], with_mark, *messages[i + 1:]],
                         enable_thinking=enable_thinking, tools=tools)
    at = text.find(CACHE_MARK)
    if at < 0:  # the template dropped the marked text (e.g. an old thinking block)
        return 0
    prefix = tokenizer.encode_prompt(text[:at])
    same = 0
    # the common prefix: the shorter of the two ends it
    for a, b in zip(prefix, prompt_ids, strict=False):
        if a != b:
            break
        same += 1
    return same
