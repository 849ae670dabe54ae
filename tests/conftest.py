"""Session fixtures shared by the whole suite: random-weight model directories and the tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dashserve.model.make import make_model
from dashserve.tokenizer import Tokenizer

# The database fixtures (db_url over SQLite and PostgreSQL, pg_available, store) for every test.
pytest_plugins = ["tests.utils.databases"]


@pytest.fixture(scope="session")
def model_dir_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``factory(preset, seed=0, dtype=None) -> Path``: a checkpoint dir, made once per session."""
    root = tmp_path_factory.mktemp("models")
    made: dict[tuple[str, int, str | None], Path] = {}

    def factory(preset: str, seed: int = 0, dtype: str | None = None) -> Path:
        key = (preset, seed, dtype)
        if key not in made:
            out = root / f"{preset}-seed{seed}-{dtype or 'default'}"
            made[key] = make_model(preset, out, seed=seed, dtype=dtype)
        return made[key]

    return factory


@pytest.fixture(scope="session")
def qwen3_tiny_dir(model_dir_factory: Callable[..., Path]) -> Path:
    return model_dir_factory("qwen3-tiny")


@pytest.fixture(scope="session")
def tokenizer(qwen3_tiny_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(qwen3_tiny_dir)
