"""Inspection settings (the ``inspection`` table of the config file) and what they build."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dashserve.inspection.rules import RuleInspector, RuleStore

if TYPE_CHECKING:
    from dashserve.inspection.guard import GuardInspector
    from dashserve.serving.registry import ModelRegistry

RULES_FILENAME = "inspection-rules.sqlite3"


class InspectionConfig(BaseModel):
    """``provider`` "rules" (the default) screens with the rule lists; "guard" with the rule
    lists and then the served model ``guard_model``; "none" refuses the header with 400."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["rules", "guard", "none"] = "rules"
    rules_path: Path | None = None  # default: in the data dir
    keywords: tuple[str, ...] = ()  # apply in every workspace, besides the stored rules
    patterns: tuple[str, ...] = ()
    guard_model: str | None = None  # a served model name
    guard_prompt: Literal["template", "instruction"] = "template"
    guard_block_controversial: bool = False
    guard_max_tokens: int = Field(default=16, ge=4, le=512)

    @model_validator(mode="after")
    def _guard_named(self) -> InspectionConfig:
        if self.provider == "guard" and not self.guard_model:
            raise ValueError("inspection provider 'guard' needs inspection.guard_model")
        return self


def build_inspector(config: InspectionConfig, data_dir: Path,
                    registry: ModelRegistry | None = None) -> RuleInspector | GuardInspector | None:
    """The screening provider ``config`` names (None: screening is off)."""
    if config.provider == "none":
        return None
    store = RuleStore(config.rules_path or data_dir / RULES_FILENAME,
                      keywords=config.keywords, patterns=config.patterns)
    rules = RuleInspector(store)
    if config.provider == "rules":
        return rules
    from dashserve.inspection.guard import GuardInspector

    if registry is None:
        raise ValueError("the guard provider needs the server's model registry")
    assert config.guard_model is not None
    return GuardInspector(registry, config.guard_model, prompt=config.guard_prompt,
                          block_controversial=config.guard_block_controversial,
                          max_tokens=config.guard_max_tokens, rules=rules)
