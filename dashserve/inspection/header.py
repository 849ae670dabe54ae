"""``X-DashScope-DataInspection``: which sides of a request to screen.

The documented value is ``{"input": "cip", "output": "cip"}``; either key may be left out
(that side is not screened) or set to ``"none"``/``"disable"``. The dashscope SDK's
``DASHSCOPE_DISABLE_DATA_INSPECTION=false`` sends ``enable``, read as both sides. Anything
else is refused with 400, naming the header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dashserve.errors import InvalidRequest

HEADER = "X-DashScope-DataInspection"
_ON = ("cip",)
_OFF = ("none", "disable", "")


@dataclass(frozen=True, slots=True)
class InspectionRequest:
    input: bool = False
    output: bool = False

    @property
    def any(self) -> bool:
        return self.input or self.output


def _refuse(detail: str) -> InvalidRequest:
    return InvalidRequest(f'{HEADER} {detail}; use {{"input": "cip", "output": "cip"}}',
                          param=HEADER)


def parse_inspection_header(value: str | None) -> InspectionRequest:
    """The sides to screen (none when the header is absent)."""
    if value is None or not value.strip():
        return InspectionRequest()
    if value.strip().lower() == "enable":
        return InspectionRequest(True, True)
    try:
        data = json.loads(value)
    except ValueError:
        raise _refuse("is not valid JSON") from None
    if not isinstance(data, dict):
        raise _refuse("must be a JSON object")
    sides = {}
    for key, raw in data.items():
        if key not in ("input", "output"):
            raise _refuse(f"has an unknown key {key!r}")
        if not isinstance(raw, str) or raw.lower() not in _ON + _OFF:
            raise _refuse(f"has an unknown value for {key!r}")
        sides[key] = raw.lower() in _ON
    return InspectionRequest(sides.get("input", False), sides.get("output", False))
