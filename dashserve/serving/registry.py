"""Served model names → engines and profiles, plus the server's readiness."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from dashserve.contracts.engine_client import EngineClient
from dashserve.errors import ModelNotFound, ModelUnavailable
from dashserve.serving.profiles import ModelProfile, profile_for


class ServerState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One name clients may use. Aliases of one checkpoint share its ``engine``."""

    name: str
    engine: EngineClient
    profile: ModelProfile  # already fitted to the engine's context
    created: int  # unix seconds, for model listings


class ModelRegistry:
    """Which names are served, and whether the server takes requests right now."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self.state = ServerState.LOADING
        self.detail = "starting"  # human-readable progress or failure reason

    def install(self, engines: Mapping[str, EngineClient]) -> None:
        """Serve ``engines`` (served name → engine) and mark the server ready."""
        now = int(time.time())
        models = {}
        for name, engine in engines.items():
            info = engine.model_info
            profile = profile_for(name, info.architecture).fitted(info.max_model_len)
            profile = profile.with_default_output(getattr(info, "default_max_tokens", None))
            models[name] = ServedModel(name, engine, profile, now)
        self._models = models
        self.state = ServerState.READY
        self.detail = f"serving {len(models)} model names"

    def get(self, name: str) -> ServedModel:
        """The served model called ``name``; 404 if unknown, 503 while not ready."""
        if self.state is not ServerState.READY:
            raise ModelUnavailable(f"Model is unavailable, please try again later "
                                   f"(server {self.state.value}: {self.detail}).")
        model = self._models.get(name)
        if model is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"Model not exist: {name!r}. Served models: {served}.",
                                param="model")
        if not engine_alive(model.engine):
            raise ModelUnavailable("Model is unavailable, please try again later "
                                   "(its engine stopped).")
        return model

    def find(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    @property
    def names(self) -> Collection[str]:
        """The served names (a live view)."""
        return self._models.keys()

    @property
    def models(self) -> list[ServedModel]:
        return [self._models[name] for name in sorted(self._models)]

    @property
    def engines(self) -> list[EngineClient]:
        """Each distinct engine once."""
        unique: dict[int, EngineClient] = {}
        for model in self._models.values():
            unique.setdefault(id(model.engine), model.engine)
        return list(unique.values())

    @property
    def is_ready(self) -> bool:
        return self.state is ServerState.READY

    @property
    def dead_engines(self) -> list[str]:
        """Served names whose engine stopped running (a crashed engine thread)."""
        return [m.name for m in self.models if not engine_alive(m.engine)]


def engine_alive(engine: EngineClient) -> bool:
    """Engines that can tell (``is_alive``) say whether they still run; others are trusted."""
    return bool(getattr(engine, "is_alive", True))
