"""Tokenizer: the runtime wrapper around a checkpoint's tokenizer.json, its special tokens,
per-token bytes and chat template (rendered the way Hugging Face transformers renders it)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dashserve.chat_templates import Renderer, fast_renderer
from dashserve.errors import InvalidRequest
from dashserve.tokenizer_build import bytes_to_unicode
from dashserve.tokenizer_pieces import PieceEncoder

if TYPE_CHECKING:
    import jinja2
    from tokenizers import Tokenizer as Backend

log = logging.getLogger(__name__)

# Names templates read a message's reasoning under; the first is the standard one.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_SPECIAL_TOKEN_NAMES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)


def _token_content(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string, an AddedToken dict or null."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _plain(value: Any) -> Any:
    """Template input rebuilt from plain JSON-like types (pydantic models and dataclasses too)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _prepare_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Drop keys whose value is None and alias the reasoning fields, as transformers does."""
    out = []
    for message in messages:
        msg = {k: v for k, v in _plain(message).items() if v is not None}
        reasoning = next((msg[k] for k in _REASONING_FIELDS if msg.get(k) is not None), None)
        if reasoning is not None:
            msg = {"thinking": reasoning, **msg, "reasoning_content": reasoning}
        out.append(msg)
    return out


def compile_chat_template(template: str) -> jinja2.Template:
    """Compile with the same environment transformers uses for chat templates."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body unchanged."""

        tags = {"generation"}

        def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            node = jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body)
            return node.set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> NoReturn:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


_GIL_FREE_CHARS = 4096  # longer texts are encoded without holding the GIL
_KEPT_PIECE_CHARS = 24  # template pieces this short have their ids kept ...
_KEPT_PIECES = 4096  # ... up to this many of them


class Tokenizer:
    """Encode/decode, special ids, per-id bytes and chat-template rendering for one checkpoint."""

    def __init__(
        self,
        backend: Backend,
        config: Mapping[str, Any] | None = None,
        chat_template: str | None = None,
        model_vocab_size: int | None = None,
    ) -> None:
        config = dict(config or {})
        self.backend = backend
        self.chat_template = chat_template
        self._compiled: jinja2.Template | None = None
        self._fast_render: Renderer | None = None  # chosen with the compiled template
        added = backend.get_added_tokens_decoder()  # id -> AddedToken
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self.id_to_bytes: list[bytes] = self._build_id_to_bytes(added, model_vocab_size)
        named = {name: _token_content(config.get(name)) for name in _SPECIAL_TOKEN_NAMES}
        self.special_tokens: dict[str, str] = {k: v for k, v in named.items() if v is not None}
        self.eos_token_id = self._id_of(self.special_tokens.get("eos_token"))
        self.pad_token_id = self._id_of(self.special_tokens.get("pad_token"))
        self.bos_token_id = self._id_of(self.special_tokens.get("bos_token"))
        # No token stands for more bytes than this: a text of n bytes has >= n / it tokens.
        self.max_token_bytes = max(1, max((len(b) for b in self.id_to_bytes), default=1))
        self._added_ids = {t.content: i for i, t in added.items()}
        self._added_re: re.Pattern[str] | None = None
        if self._added_ids:  # longest first: the match the tokenizer itself would make
            self._added_re = re.compile("|".join(
                re.escape(t) for t in sorted(self._added_ids, key=len, reverse=True)))
        self._plain_backend: Backend | None = None  # built by prepare_plain (servers do it at load)
        self._pieces: PieceEncoder | None = None  # ASCII text piece by piece (with the above)
        self._plain_lock = threading.Lock()
        # the short pieces between a template's control tokens ("assistant\n", "\n\n") recur
        # in every prompt: their ids are kept rather than asked of the tokenizer each time
        self._piece_ids: dict[str, tuple[int, ...]] = {}
        # Client text stands in the template with its added tokens replaced by these marks
        # (private-use characters and a per-tokenizer nonce, which JSON leaves as they are).
        nonce = secrets.token_hex(6)
        self._marks = {t: f"\ue000{nonce}{i}\ue001" for i, t in enumerate(self._added_ids)}
        self._unmarks = {m: t for t, m in self._marks.items()}
        self._mark_re = re.compile(f"\ue000{nonce}\\d+\ue001")
        stops = [self.eos_token_id, self.token_to_id("<|endoftext|>")]
        self.stop_token_ids: tuple[int, ...] = tuple(
            dict.fromkeys(i for i in stops if i is not None)
        )

    def _build_id_to_bytes(
        self, added: Mapping[int, Any], model_vocab_size: int | None
    ) -> list[bytes]:
        to_latin1 = str.maketrans({u: chr(b) for b, u in bytes_to_unicode().items()})
        table = [b""] * max(self.vocab_size, model_vocab_size or 0)
        for token, i in self.backend.get_vocab(with_added_tokens=False).items():
            try:  # byte-level chars -> the bytes they stand for
                table[i] = token.translate(to_latin1).encode("latin-1")
            except UnicodeEncodeError:  # not a byte-level vocabulary entry
                table[i] = token.encode("utf-8")
        for i, tok in added.items():
            table[i] = tok.content.encode("utf-8")
        return table

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.token_to_id(token)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load tokenizer.json + tokenizer_config.json (+ chat_template.jinja when present). The id
        table is padded to config.json's vocab_size when the directory is a model checkpoint."""
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        backend = Backend.from_file(str(path / "tokenizer.json"))
        cfg_path = path / "tokenizer_config.json"
        config = json.loads(cfg_path.read_text("utf-8")) if cfg_path.exists() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        jinja_path = path / "chat_template.jinja"
        if jinja_path.exists():
            template = jinja_path.read_text("utf-8")
        return cls(backend, config, template, _model_vocab_size(path))

    # ---- encoding ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; added/special tokens in the text are recognized. No BOS.

        Long texts go through ``encode_batch``, which lets other Python threads (the
        server's event loop) run while it works.
        """
        if len(text) > _GIL_FREE_CHARS:
            return self.backend.encode_batch([text], add_special_tokens=False)[0].ids
        return self.backend.encode(text, add_special_tokens=False).ids

    def prepare_plain(self) -> Backend:
        """Build the plain-text tokenizer now (about a second, holding the GIL): a server does
        this while loading, so no request pays for it."""
        with self._plain_lock:
            if self._plain_backend is None:
                spec = json.loads(self.backend.to_str())
                plain = _without_added_tokens(spec)
                self._pieces = PieceEncoder.of(plain, spec)
                self._plain_backend = plain
        return self._plain_backend

    def prepare_for_serving(self) -> None:
        """Build the plain-text tokenizer and compile the chat template now (about a second,
        holding the GIL): a server does this while loading, so no request pays for it."""
        self.prepare_plain()
        if self.chat_template and self._compiled is None:
            self._compile_template()

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text: special and added tokens typed in it (such as
        ``<|im_start|>``) are encoded as the ordinary tokens of their characters."""
        backend = self._plain_backend
        if backend is None:
            backend = self.prepare_plain()
        if len(text) > _GIL_FREE_CHARS:
            return backend.encode_batch([text], add_special_tokens=False)[0].ids
        pieces = self._pieces
        if pieces is not None and text.isascii():
            return pieces.encode(text)
        return backend.encode(text, add_special_tokens=False).ids

    def escape_added(self, text: str) -> str:
        """Client text made safe to render in a template: its added tokens are marked, so
        neither the template nor ``encode_prompt`` takes them for control tokens."""
        if self._added_re is None or not self._added_re.search(text):
            return text
        return self._added_re.sub(lambda m: self._marks[m.group()], text)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt whose client text went through ``escape_added``.

        The added tokens left in ``text`` are the template's own and become control tokens;
        the text between them (template and client text) is encoded as plain text, the way
        ``encode`` encodes the pieces between added tokens, so ordinary prompts get exactly
        the ids ``encode`` gives them.
        """
        if self._added_re is None:
            return self.encode(text)
        ids: list[int] = []
        start = 0
        for match in self._added_re.finditer(text):
            if match.start() > start:
                ids += self._encode_piece(text[start:match.start()])
            ids.append(self._added_ids[match.group()])
            start = match.end()
        if start < len(text):
            ids += self._encode_piece(text[start:])
        return ids

    def _encode_piece(self, piece: str) -> list[int] | tuple[int, ...]:
        if len(piece) <= _KEPT_PIECE_CHARS:
            ids = self._piece_ids.get(piece)
            if ids is None:
                ids = tuple(self._encode_unmarked(piece))
                if len(self._piece_ids) < _KEPT_PIECES:
                    self._piece_ids[piece] = ids
            return ids
        return self._encode_unmarked(piece)

    def _encode_unmarked(self, piece: str) -> list[int]:
        if "\ue000" in piece:
            piece = self._mark_re.sub(lambda m: self._unmarks.get(m.group(), m.group()), piece)
        return self.encode_plain(piece)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes token ``token_id`` stands for; b"" for ids with no token."""
        if 0 <= token_id < len(self.id_to_bytes):
            return self.id_to_bytes[token_id]
        return b""

    def token_str(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def token_to_id(self, text: str) -> int | None:
        return self.backend.token_to_id(text)

    # ---- chat template ----------------------------------------------------------------------

    def _compile_template(self) -> jinja2.Template:
        """Compile the chat template and pick its plain-Python renderer, if it has one."""
        template = self.chat_template or ""
        self._fast_render = fast_renderer(template)
        self._compiled = compile_chat_template(template)
        return self._compiled

    def apply_chat_template(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for ``messages``; equal to transformers'
        ``apply_chat_template(messages, tools=tools, tokenize=False, ...)``.

        Plain text conversations under a known template (Qwen3's) are rendered by its
        plain-Python equal in ``chat_templates``; everything else by the template itself."""
        import jinja2

        if not self.chat_template:
            raise InvalidRequest("this model has no chat template; send a plain prompt instead")
        compiled = self._compiled
        if compiled is None:
            compiled = self._compile_template()
        variables = _plain(template_kwargs)
        kwargs = {**self.special_tokens, **variables}
        documents = kwargs.pop("documents", None)
        try:
            prepared = _prepare_messages(messages)
            if self._fast_render is not None:
                text = self._fast_render(prepared, tools, documents, add_generation_prompt,
                                         variables)
                if text is not None:
                    return text
            return compiled.render(
                messages=prepared,
                tools=_plain(list(tools)) if tools is not None else None,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **kwargs,
            )
        except (jinja2.TemplateError, TypeError) as exc:
            raise InvalidRequest(
                f"the messages do not fit the model's chat template: {exc}"
            ) from exc


def _without_added_tokens(spec: dict[str, Any]) -> Backend:
    """The tokenizer of ``spec`` (a tokenizer.json) without its added tokens (ordinary
    tokens keep their ids)."""
    from tokenizers import Tokenizer as Backend

    return Backend.from_str(json.dumps({**spec, "added_tokens": []}))


def _model_vocab_size(path: Path) -> int | None:
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        return None
    cfg = json.loads(cfg_path.read_text("utf-8"))
    size = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    return int(size) if size else None
