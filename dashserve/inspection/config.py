"""Inspection settings (the ``inspection`` table of the config file) and what they build."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dashserve.inspection.rules import RuleInspector, RuleStore

RULES_FILENAME = "inspection-rules.sqlite3"


class InspectionConfig(BaseModel):
    """``provider`` "rules" (the default) screens with the rule lists; "none" refuses the
    header with 400."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["rules", "none"] = "rules"
    rules_path: Path | None = None  # default: in the data dir
    keywords: tuple[str, ...] = ()  # apply in every workspace, besides the stored rules
    patterns: tuple[str, ...] = ()


def build_inspector(config: InspectionConfig, data_dir: Path) -> RuleInspector | None:
    if config.provider == "none":
        return None
    store = RuleStore(config.rules_path or data_dir / RULES_FILENAME,
                      keywords=config.keywords, patterns=config.patterns)
    return RuleInspector(store)
