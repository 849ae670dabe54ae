"""Typed configuration of upstream pools: ``[[upstreams]]`` tables and ``--upstream`` flags.

    [[upstreams]]
    name = "qwen-plus"                       # served model name (aliases: served_model_names)
    kind = "vllm"                            # openai | vllm | sglang | llamacpp | dashserve
    urls = ["http://gpu1:8000", "http://gpu2:8000"]
    tokenizer = "/models/Qwen3-8B"           # the checkpoint (or its tokenizer) the upstreams serve
    upstream_model = "Qwen/Qwen3-8B"         # the name the upstream knows it by (default: name)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KINDS: tuple[str, ...] = ("openai", "vllm", "sglang", "llamacpp", "dashserve")


class UpstreamSpec(BaseModel):
    """One pool: the endpoints of one kind serving one model under ``names``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: str
    urls: tuple[str, ...] = Field(min_length=1)
    served_model_names: tuple[str, ...] = ()  # more names for the same pool
    # Directory with tokenizer.json (and config.json): the front renders and tokenizes with it.
    # None: the demo model's (the real Qwen3 tokenizer). Kind "dashserve" (``engine-serve``
    # processes) takes the engines' own tokenizer, name and context, and refuses these.
    tokenizer: str | None = None
    upstream_model: str | None = None
    max_model_len: int | None = Field(default=None, ge=16)
    api_key: str | None = None  # sent as a bearer token (engine-serve: its --secret)
    # Routing (see dashserve.upstream.routing) and retries / health (dashserve.upstream.pool).
    affinity_block_tokens: int = Field(default=16, ge=1)
    load_factor: float = Field(default=1.25, ge=1.0)
    max_attempts: int = Field(default=3, ge=1)
    probe_interval_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)  # longest silence within a stream
    max_connections: int = Field(default=1024, ge=1)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown upstream kind {kind!r}; known: {', '.join(KINDS)}")
        return kind

    @model_validator(mode="after")
    def _engine_fields(self) -> UpstreamSpec:
        if self.kind == "dashserve":
            given = [k for k in ("tokenizer", "upstream_model", "max_model_len")
                     if getattr(self, k) is not None]
            if given:
                raise ValueError(f"kind 'dashserve' takes the engines' own {', '.join(given)}; "
                                 "leave it out")
        return self

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream URL {url!r} must start with http:// or https://")
        return tuple(u.rstrip("/") for u in urls)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.name, *self.served_model_names)))


def parse_upstream_flag(value: str, tokenizer: str | None = None) -> UpstreamSpec:
    """The pool a ``--upstream NAME=KIND:URL[,URL...]`` flag describes."""
    name, sep, rest = value.partition("=")
    kind, sep2, urls = rest.partition(":")
    if not (sep and sep2 and name and kind and urls):
        raise ValueError(f"--upstream {value!r}: expected NAME=KIND:URL[,URL...]")
    return UpstreamSpec(name=name, kind=kind, urls=tuple(u for u in urls.split(",") if u),
                        tokenizer=None if kind == "dashserve" else tokenizer)
