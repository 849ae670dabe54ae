"""Wire shapes of the admin API: key creation and listing, usage reports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateKeyRequest(AdminModel):
    name: str | None = Field(default=None, max_length=200)
    workspace: str = Field(default="default", min_length=1, max_length=200)
    models: list[str] | None = None  # None: every model
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    expires: str | None = None  # "30d", "12h", "2026-12-31" or an ISO datetime
    is_admin: bool = False


class KeyInfo(AdminModel):
    id: str
    prefix: str
    name: str | None
    workspace: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    is_admin: bool
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    is_active: bool


class CreatedKey(KeyInfo):
    secret: str  # shown in this response only


class KeyList(AdminModel):
    object: str = "list"
    data: list[KeyInfo]


class UsageReport(AdminModel):
    object: str = "usage_report"
    by: str
    data: list[dict[str, Any]]


class UsageRecords(AdminModel):
    object: str = "list"
    data: list[dict[str, Any]]
