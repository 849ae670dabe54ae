"""``fileid://`` documents: a system message naming uploaded files becomes their text.

As in DashScope's long-document chat (qwen-long), a system message whose content is
``fileid://file-fe-1`` (or several ids, comma-separated) stands for the documents
themselves: its content is replaced by their extracted text, which the model reads as
context and which is counted (and billed) as input tokens like any other prompt text.
The same document therefore renders to the same prompt prefix every time, and the prefix
cache serves it to later questions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from dashserve.errors import InvalidRequest
from dashserve.serving.request import Message

FILEID_SCHEME = "fileid://"
DOCUMENT_SEPARATOR = "\n\n"


class DocumentSource(Protocol):
    """Where the text of uploaded files comes from (``platform.files.FileService``)."""

    async def documents(self, workspace: str | None, file_ids: Sequence[str]) -> list[str]:
        """Texts of ``file_ids`` in order; raises a 400 for ids ``workspace`` cannot use."""


def file_ids_of(message: Message) -> list[str] | None:
    """The file ids a ``fileid://`` system message names, or None for any other message."""
    if message.role != "system" or not message.content.lstrip().startswith(FILEID_SCHEME):
        return None
    listed = message.content.strip()[len(FILEID_SCHEME):]
    ids = [part.strip() for part in listed.split(",")]
    ids = [i.removeprefix(FILEID_SCHEME) for i in ids]
    if not ids or any(not i for i in ids):
        raise InvalidRequest(f"Invalid file reference {message.content.strip()!r}: expected "
                             "fileid://ID or fileid://ID1,ID2", param="messages")
    return ids


def has_documents(messages: Sequence[Message]) -> bool:
    return any(file_ids_of(m) is not None for m in messages)


async def expand_documents(messages: Sequence[Message], source: DocumentSource | None,
                           workspace: str | None) -> tuple[Message, ...]:
    """``messages`` with every ``fileid://`` system message replaced by the documents' text.

    Without a document source the messages come back unchanged (prompt checks refuse them).
    """
    if source is None or not has_documents(messages):
        return tuple(messages)
    out: list[Message] = []
    for message in messages:
        ids = file_ids_of(message)
        if ids is None:
            out.append(message)
            continue
        texts = await source.documents(workspace, ids)
        out.append(dataclasses.replace(message, content=DOCUMENT_SEPARATOR.join(texts),
                                       cache_until=None))
    return tuple(out)
