"""search.options: every search_options key checked as the parameter reference says."""

from __future__ import annotations

from typing import Any

import pytest

from dashserve.errors import InvalidRequest, UnsupportedFeature
from dashserve.search.options import SearchOptions, parse_search_options


def test_defaults_and_values() -> None:
    assert parse_search_options(True, None, "qwen-plus") == SearchOptions()
    options = parse_search_options(True, {
        "enable_source": True, "enable_citation": True, "citation_format": "[ref_<number>]",
        "forced_search": True, "search_strategy": "max", "prepend_search_result": True,
        "enable_search_extension": False, "future_key": 1}, "qwen-plus")
    assert options == SearchOptions(True, True, "[ref_<number>]", True, "max", True)
    assert options.marker(3) == "[ref_3]" and SearchOptions().marker(2) == "[2]"


def test_search_options_without_enable_search_are_checked_but_off() -> None:
    assert parse_search_options(False, {"forced_search": True}, "qwen-plus") is None
    with pytest.raises(InvalidRequest):
        parse_search_options(False, {"forced_search": "yes"}, "qwen-plus")


@pytest.mark.parametrize(("raw", "param"), [
    ("turbo", "search_options"),
    ({"enable_source": 1}, "search_options.enable_source"),
    ({"forced_search": "true"}, "search_options.forced_search"),
    ({"search_strategy": "fast"}, "search_options.search_strategy"),
    ({"citation_format": "(<number>)"}, "search_options.citation_format"),
    ({"enable_citation": True}, "search_options.enable_citation"),
    ({"prepend_search_result": True}, "search_options.prepend_search_result"),
])
def test_malformed_options(raw: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_search_options(True, raw, "qwen-plus")
    assert caught.value.param == param


def test_domain_enhancement_is_refused() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        parse_search_options(True, {"enable_search_extension": True}, "qwen-plus")
    assert caught.value.param == "search_options.enable_search_extension"


def test_agent_strategy_only_on_qwen3_max_and_only_with_sources() -> None:
    agent = {"search_strategy": "agent", "enable_source": True}
    for model in ("qwen3-max", "qwen3-max-2025-09-23"):
        assert parse_search_options(True, agent, model).strategy == "agent"  # type: ignore[union-attr]
    for model in ("qwen-plus", "qwen3-max-preview"):
        with pytest.raises(InvalidRequest):
            parse_search_options(True, agent, model)
    for extra in ({"forced_search": True}, {"enable_citation": True},
                  {"prepend_search_result": True}):
        with pytest.raises(InvalidRequest, match="only supports enable_source"):
            parse_search_options(True, {**agent, **extra}, "qwen3-max")
