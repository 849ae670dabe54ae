"""``enable_search`` and ``search_options``: checked once, as the parameter reference says.

``search_options`` only matters with ``enable_search`` true, but a malformed object is
refused either way. Rules: booleans are booleans; ``citation_format`` is ``"[<number>]"``
or ``"[ref_<number>]"``; ``search_strategy`` is ``turbo``, ``max`` or ``agent``;
``enable_citation`` needs ``enable_source``; ``prepend_search_result`` needs
``enable_source``; ``agent`` runs on qwen3-max names only and then allows nothing but
``enable_source``; ``enable_search_extension`` (domain enhancement) is refused: no provider
here has domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from dashserve.errors import InvalidRequest, UnsupportedFeature

CITATION_FORMATS = ("[<number>]", "[ref_<number>]")
Strategy = Literal["turbo", "max", "agent"]
STRATEGIES = ("turbo", "max", "agent")
AGENT_MODELS = re.compile(r"^qwen3-max(-2025-09-23)?$")
_BOOLS = ("enable_source", "enable_citation", "forced_search", "enable_search_extension",
          "prepend_search_result")
P = "search_options"


@dataclass(frozen=True, slots=True)
class SearchOptions:
    enable_source: bool = False
    enable_citation: bool = False
    citation_format: str = "[<number>]"
    forced_search: bool = False
    strategy: Strategy = "turbo"
    prepend_search_result: bool = False

    def marker(self, number: int) -> str:
        """The citation marker of result ``number``: ``[1]`` or ``[ref_1]``."""
        return self.citation_format.replace("<number>", str(number))


def parse_search_options(enable_search: bool, raw: Any, model: str) -> SearchOptions | None:
    """The options of a search request; None when ``enable_search`` is not true."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRequest("search_options must be an object", param=P)
    for name in _BOOLS:
        if name in raw and raw[name] is not None and not isinstance(raw[name], bool):
            raise InvalidRequest(f"{P}.{name} must be a boolean", param=f"{P}.{name}")
    fmt = raw.get("citation_format") or "[<number>]"
    if fmt not in CITATION_FORMATS:
        raise InvalidRequest(f'{P}.citation_format must be "[<number>]" or "[ref_<number>]"',
                             param=f"{P}.citation_format")
    strategy = raw.get("search_strategy") or "turbo"
    if strategy not in STRATEGIES:
        raise InvalidRequest(f"{P}.search_strategy must be one of turbo, max, agent",
                             param=f"{P}.search_strategy")
    options = SearchOptions(
        enable_source=bool(raw.get("enable_source")),
        enable_citation=bool(raw.get("enable_citation")), citation_format=fmt,
        forced_search=bool(raw.get("forced_search")),
        strategy=cast(Strategy, strategy),  # one of STRATEGIES, checked above
        prepend_search_result=bool(raw.get("prepend_search_result")))
    if options.enable_citation and not options.enable_source:
        raise InvalidRequest(f"{P}.enable_citation needs {P}.enable_source true",
                             param=f"{P}.enable_citation")
    if options.prepend_search_result and not options.enable_source:
        raise InvalidRequest(f"{P}.prepend_search_result needs {P}.enable_source true",
                             param=f"{P}.prepend_search_result")
    if raw.get("enable_search_extension"):
        raise UnsupportedFeature("domain enhancement (search_options.enable_search_extension) "
                                 "is not available on this server",
                                 param=f"{P}.enable_search_extension")
    if strategy == "agent":
        if not AGENT_MODELS.match(model):
            raise InvalidRequest("search_strategy 'agent' is only available on qwen3-max and "
                                 "qwen3-max-2025-09-23", param=f"{P}.search_strategy")
        others = [n for n in ("enable_citation", "forced_search", "prepend_search_result")
                  if getattr(options, n)]
        if others:
            raise InvalidRequest(f"search_strategy 'agent' only supports enable_source; "
                                 f"remove {', '.join(others)}", param=f"{P}.search_strategy")
    return options if enable_search else None
