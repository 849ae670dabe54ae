"""``fileid://`` system messages: parsing the ids and putting the documents in their place."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dashserve.errors import InvalidRequest
from dashserve.serving.documents import expand_documents, file_ids_of, has_documents
from dashserve.serving.prompt import check_messages
from dashserve.serving.request import Message


class Library:
    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.calls: list[tuple[str | None, list[str]]] = []

    async def documents(self, workspace: str | None, file_ids: Sequence[str]) -> list[str]:
        self.calls.append((workspace, list(file_ids)))
        missing = [i for i in file_ids if i not in self.texts]
        if missing:
            raise InvalidRequest(f"File [id:{missing[0]}] cannot be found.")
        return [self.texts[i] for i in file_ids]


def test_ids_are_parsed_from_system_messages_only() -> None:
    assert file_ids_of(Message("system", "fileid://file-fe-1")) == ["file-fe-1"]
    assert file_ids_of(Message("system", " fileid://a, b ,fileid://c")) == ["a", "b", "c"]
    assert file_ids_of(Message("user", "fileid://a")) is None
    assert file_ids_of(Message("system", "You are helpful.")) is None
    for bad in ("fileid://", "fileid://a,,b", "fileid://a,"):
        with pytest.raises(InvalidRequest, match="fileid://ID"):
            file_ids_of(Message("system", bad))


async def test_documents_replace_their_message() -> None:
    library = Library({"a": "Doc A text.", "b": "Doc B text."})
    messages = (Message("system", "You are helpful."), Message("system", "fileid://a,b"),
                Message("user", "Summarise."))
    out = await expand_documents(messages, library, "ws-1")
    assert [m.content for m in out] == ["You are helpful.", "Doc A text.\n\nDoc B text.",
                                        "Summarise."]
    assert library.calls == [("ws-1", ["a", "b"])]
    assert not has_documents(out)
    check_messages(out)  # nothing left for the prompt checks to refuse


async def test_unknown_ids_and_no_source() -> None:
    messages = (Message("system", "fileid://nope"), Message("user", "hi"))
    with pytest.raises(InvalidRequest, match="nope"):
        await expand_documents(messages, Library({}), None)
    unchanged = await expand_documents(messages, None, None)
    assert unchanged == messages
    with pytest.raises(InvalidRequest, match="fileid://"):
        check_messages(unchanged)  # a server without files refuses them
