"""Settings: defaults, precedence (init > env > file), config files, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dashserve.config import DEMO_NAMES, DEMO_VL_NAMES, ModelSpec, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    s = Settings()
    assert (s.host, s.port, s.api_keys) == ("127.0.0.1", 8000, ())
    assert s.data_dir == tmp_path / ".local" / "share" / "dashserve"
    assert s.partial_response_timeout_s == 280 and s.is_demo
    demo, vision = s.model_specs()
    assert demo.names == DEMO_NAMES and demo.model == str(s.demo_dir)
    assert "qwen-plus" in DEMO_NAMES and "qwen3-0.6b" in DEMO_NAMES
    assert vision.names == DEMO_VL_NAMES and "qwen3-vl-plus" in vision.names
    assert vision.model == str(s.data_dir / "models" / "demo-qwen3-vl-tiny")
    assert len(Settings(demo_vl_preset=None).model_specs()) == 1


def test_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DASHSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DASHSERVE_PORT", "9001")
    monkeypatch.setenv("DASHSERVE_API_KEYS", '["k1","k2"]')
    s = Settings()
    assert (s.data_dir, s.port, s.api_keys) == (tmp_path, 9001, ("k1", "k2"))
    assert Settings(port=9002).port == 9002  # explicit values beat the environment


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dashserve.toml"
    path.write_text('port = 9100\napi_keys = ["sk-a"]\nmax_num_seqs = 8\n'
                    '[[models]]\nmodel = "/m/Qwen3-8B"\nserved_model_names = ["qwen-plus", "q8"]\n'
                    'max_model_len = 8192\n[[models]]\nmodel = "/m/Other/"\n')
    monkeypatch.setenv("DASHSCOPE_UNRELATED", "1")
    s = Settings(config_file=path)
    assert (s.port, s.api_keys, s.is_demo) == (9100, ("sk-a",), False)
    first, second = s.model_specs()
    assert first.names == ("qwen-plus", "q8") and second.names == ("Other",)
    opts = s.engine_options(first)
    assert opts.max_model_len == 8192 and opts.max_num_seqs == 8
    assert opts.dtype == "auto"
    monkeypatch.setenv("DASHSERVE_PORT", "9200")
    assert Settings(config_file=path).port == 9200  # env beats the file
    assert Settings(config_file=path, port=9300).port == 9300


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"host": "0.0.0.0", "models": [{"model": "hub/id"}]}')
    s = Settings(config_file=path)
    assert s.host == "0.0.0.0" and s.model_specs()[0].names == ("id",)


@pytest.mark.parametrize("values", [
    {"port": 70000}, {"partial_response_timeout_s": 0}, {"unknown_option": 1},
    {"models": [{"model": "a", "served_model_names": ["x"]},
                {"model": "b", "served_model_names": ["x"]}]},
    {"models": [{"model": "a", "max_model_len": 1}]},
])
def test_invalid(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_bad_file_suffix(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 1")
    with pytest.raises(ValueError):
        Settings(config_file=path)


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]
    assert ModelSpec(model="x").dtype is None
