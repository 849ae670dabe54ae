"""Settings: every server option, validated once, from CLI values > env (DASHSERVE_*) > config file.

The config file (``--config FILE`` or ``DASHSERVE_CONFIG_FILE``) is TOML or JSON with
the same keys as ``Settings``; several models go in a ``models`` list::

    port = 8000
    api_keys = ["sk-local-1"]
    [[models]]
    model = "/models/Qwen3-8B"
    served_model_names = ["qwen-plus", "qwen3-8b"]
    max_model_len = 32768

Pools of upstream servers (vLLM, SGLang, llama.cpp, any OpenAI-compatible server) go in
``upstreams`` (fields in ``dashserve.upstream.config.UpstreamSpec``)::

    [[upstreams]]
    name = "qwen3-8b"
    kind = "vllm"
    urls = ["http://gpu1:8000", "http://gpu2:8000"]
    tokenizer = "/models/Qwen3-8B"
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dashserve.inspection.config import InspectionConfig
from dashserve.platform.limits import LimitPolicy
from dashserve.platform.metering import WriterConfig
from dashserve.platform.state import PlatformSettings
from dashserve.search.config import SearchConfig
from dashserve.upstream.config import UpstreamSpec

# Names the demo model answers to: the model names the DashScope docs use in examples.
DEMO_NAMES: tuple[str, ...] = (
    "qwen-plus", "qwen-max", "qwen-flash", "qwen-turbo", "qwen3-max", "qwen3-0.6b",
    "qwen-plus-latest", "qwen-max-latest", "qwen-turbo-latest", "qwen-long",
)
# Names the vision demo model answers to (the image examples of the DashScope docs).
DEMO_VL_NAMES: tuple[str, ...] = (
    "qwen3-vl-plus", "qwen3-vl-flash", "qwen-vl-max", "qwen-vl-plus", "qwen-vl-max-latest",
    "qwen-vl-plus-latest",
)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dashserve"


class ModelSpec(BaseModel):
    """One checkpoint to load and the names it is served under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="checkpoint directory or hub id")
    served_model_names: tuple[str, ...] = ()
    # Engine options; None means the server-wide value from Settings.
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=16)
    kv_cache_gb: float | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=16)

    @property
    def names(self) -> tuple[str, ...]:
        """Served names; the checkpoint's directory name when none were given."""
        return self.served_model_names or (Path(self.model.rstrip("/")).name,)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The engine options one model is loaded with (``EngineConfig`` fields of the same
    names)."""

    dtype: str
    max_model_len: int | None
    kv_cache_gb: float | None
    max_num_seqs: int
    max_num_batched_tokens: int


class RayConfig(BaseModel):
    """``[ray]``: engine replicas as Ray Serve deployments (``serve --ray``; extra ``ray``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    replicas: int = Field(default=2, ge=1)  # engine replicas of each model
    address: str | None = None  # an existing cluster ("ray://host:10001", "auto"); None: local
    num_cpus_per_replica: float = Field(default=1.0, ge=0)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the TOML/JSON file named by ``config_file`` (init value or env)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        if not self._path:
            return {}
        path = Path(self._path)
        text = path.read_text("utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10: the same parser, from PyPI
                import tomli as tomllib

            data = tomllib.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .toml or .json")
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a table of settings")
        return data


class Settings(BaseSettings):
    """All server options. Built once at start-up; frozen afterwards."""

    model_config = SettingsConfigDict(env_prefix="DASHSERVE_", frozen=True, extra="forbid")

    config_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: tuple[str, ...] = ()
    data_dir: Path = Field(default_factory=default_data_dir)
    models: tuple[ModelSpec, ...] = ()
    # Served names answered by pools of upstream servers instead of a local engine.
    upstreams: tuple[UpstreamSpec, ...] = ()
    demo_preset: str = "qwen3-0.6b"
    # Engine options for models that do not set their own.
    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    kv_cache_gb: float | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=64, ge=1)
    max_num_batched_tokens: int = Field(default=512, ge=16)
    demo_names: tuple[str, ...] = DEMO_NAMES
    # The vision demo served beside the text demo (None: no vision demo).
    demo_vl_preset: str | None = "qwen3-vl-tiny"
    demo_vl_names: tuple[str, ...] = DEMO_VL_NAMES
    partial_response_timeout_s: float = Field(default=280.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    sse_keepalive_s: float = Field(default=20.0, gt=0)
    sse_status_line: bool = True
    max_inflight_per_model: int = Field(default=256, ge=1)
    # Per engine: new requests get 429 at once when this many already wait (None: no limit),
    # or when any wait and the KV cache is at least this full.
    max_waiting: int | None = Field(default=None, ge=1)
    max_kv_usage: float = Field(default=1.0, gt=0, le=1)
    # Limits of the keys given with --api-key (database keys carry their own).
    api_key_rpm: int | None = Field(default=None, ge=1)
    api_key_tpm: int | None = Field(default=None, ge=1)
    api_key_max_concurrency: int | None = Field(default=None, ge=1)
    max_body_bytes: int = Field(default=32 * 2**20, ge=1024)
    # One prefix cache for every workspace (single-tenant deployments); by default each
    # workspace reuses only its own cached prompts.
    share_prefix_cache: bool = False
    # Media in requests (images): sources, caps and the SDK's upload space.
    public_url: str | None = None  # base URL clients reach us at (upload policies name it)
    allowed_local_media_path: Path | None = None  # file:// and paths only under it
    media_allowed_domains: tuple[str, ...] = ()  # http(s) hosts allowed; empty: any public
    media_allow_loopback: bool = False  # tests only: let URLs reach 127.0.0.1
    media_max_bytes: int = Field(default=20 * 2**20, ge=1024)
    max_images_per_request: int = Field(default=32, ge=1)
    upload_ttl_s: float = Field(default=48 * 3600.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # Platform: keys, limits and usage live in this database (SQLite in the data dir by default).
    database_url: str | None = None
    redis_url: str | None = None
    admin_keys: tuple[str, ...] = ()
    console: bool = True  # the web console at /console (--no-console, DASHSERVE_CONSOLE=0)
    # Web search providers (enable_search) and content screening (X-DashScope-DataInspection).
    search: SearchConfig = Field(default_factory=SearchConfig)
    inspection: InspectionConfig = Field(default_factory=InspectionConfig)
    # Files API: uploaded bytes and extracted text (default: "files" in the data dir; every
    # server process sharing a database must see the same directory) and the caps.
    files_dir: Path | None = None
    max_file_bytes: int = Field(default=150 * 2**20, ge=1)
    max_files_per_workspace: int = Field(default=10_000, ge=1)
    max_file_bytes_per_workspace: int = Field(default=100 * 2**30, ge=1)
    # Usage records are stored at least this often: a kill -9 loses at most this window.
    usage_flush_s: float = Field(default=0.5, gt=0, le=60)
    # Engine replicas on Ray Serve instead of engines in this process.
    ray: RayConfig = Field(default_factory=RayConfig)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {})
        path = init_kwargs.get("config_file") or os.environ.get("DASHSERVE_CONFIG_FILE")
        return init_settings, env_settings, _ConfigFileSource(settings_cls,
                                                              str(path) if path else None)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: dict[str, str] = {}
        for spec in self.models:
            for name in spec.names:
                if name in seen:
                    raise ValueError(f"served model name {name!r} is given to both "
                                     f"{seen[name]!r} and {spec.model!r}")
                seen[name] = spec.model
        for upstream in self.upstreams:
            for name in upstream.names:
                if name in seen:
                    raise ValueError(f"served model name {name!r} is given to both "
                                     f"{seen[name]!r} and the upstream pool {upstream.name!r}")
                seen[name] = f"upstream {upstream.name}"
        return self

    @property
    def is_demo(self) -> bool:
        """No model and no upstream configured: serve the random-weight demo model."""
        return not self.models and not self.upstreams

    @property
    def files_path(self) -> Path:
        return self.files_dir or self.data_dir / "files"

    @property
    def demo_dir(self) -> Path:
        return self.data_dir / "models" / f"demo-{self.demo_preset}"

    def demo_models(self) -> tuple[tuple[str, Path, tuple[str, ...]], ...]:
        """(preset, directory, served names) of each demo model: text, then vision."""
        demos = [(self.demo_preset, self.demo_dir, self.demo_names)]
        if self.demo_vl_preset:
            demos.append((self.demo_vl_preset,
                          self.data_dir / "models" / f"demo-{self.demo_vl_preset}",
                          self.demo_vl_names))
        return tuple(demos)

    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models to load; the demo models when none (and no upstream) is configured."""
        if not self.is_demo:
            return self.models
        return tuple(ModelSpec(model=str(out), served_model_names=names)
                     for _, out, names in self.demo_models())

    def platform_settings(self) -> PlatformSettings:
        """What the platform (keys, limits, usage, database) takes from these settings."""
        return PlatformSettings(
            data_dir=self.data_dir.expanduser(), database_url=self.database_url,
            redis_url=self.redis_url, static_keys=tuple(k for k in self.api_keys if k),
            admin_keys=tuple(k for k in self.admin_keys if k),
            static_limits=LimitPolicy(self.api_key_rpm, self.api_key_tpm,
                                      self.api_key_max_concurrency),
            writer=WriterConfig(flush_interval_s=self.usage_flush_s),
        )

    def engine_options(self, spec: ModelSpec) -> EngineOptions:
        """The engine options of ``spec``: its own, else the server-wide ones."""
        return EngineOptions(
            dtype=spec.dtype or self.dtype,
            max_model_len=spec.max_model_len or self.max_model_len,
            kv_cache_gb=spec.kv_cache_gb or self.kv_cache_gb,
            max_num_seqs=spec.max_num_seqs or self.max_num_seqs,
            max_num_batched_tokens=spec.max_num_batched_tokens or self.max_num_batched_tokens,
        )
