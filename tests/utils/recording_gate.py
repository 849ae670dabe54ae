"""RecordingGate: StaticKeyGate that keeps every UsageRecord (and can refuse admission, or
answer it slowly while expecting to admit, as a shared limiter with room does)."""

from __future__ import annotations

import asyncio

from dashserve.errors import DashServeError
from dashserve.platform.gate import Admission, Principal, UsageRecord
from dashserve.platform.static_gate import StaticKeyGate


class RecordingGate(StaticKeyGate):
    def __init__(self, api_keys: tuple[str, ...] = ("sk-test",)) -> None:
        super().__init__(api_keys)
        self.records: list[UsageRecord] = []
        self.admissions: list[Admission] = []
        self.refuse_with: DashServeError | None = None
        self.expects = False  # what expects_admission answers
        self.hold: asyncio.Event | None = None  # set: admit waits for it
        self.asked = 0  # admissions asked for, answered or not
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def admit(self, principal: Principal, request_id: str, model: str,
                    estimated_tokens: int) -> Admission:
        self.asked += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.refuse_with is not None:
            raise self.refuse_with
        admission = await super().admit(principal, request_id, model, estimated_tokens)
        self.admissions.append(admission)
        return admission

    def expects_admission(self, principal: Principal, estimated_tokens: int) -> bool:
        return self.expects

    async def finish(self, admission: Admission, record: UsageRecord) -> None:
        self.records.append(record)
        await super().finish(admission, record)

    def records_for(self, request_id: str) -> list[UsageRecord]:
        return [r for r in self.records if r.request_id == request_id]
