"""GenerationService and GenerationRun without HTTP: admission, the life cycle, billing once."""

from __future__ import annotations

import asyncio

import pytest

from dashserve.errors import InternalError, InvalidRequest, ServerBusy, Throttled
from dashserve.platform.gate import Principal
from dashserve.serving.registry import ModelRegistry
from dashserve.serving.request import GenerationRequest, Message, RequestedParams
from dashserve.serving.run import GenerationRun
from dashserve.serving.service import GenerationService
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.waiting import until

PRINCIPAL = Principal(key_id=None, key_prefix="sk-", workspace=None)


def make_service(engine: FakeEngine, **kwargs: int) -> tuple[GenerationService, RecordingGate]:
    registry = ModelRegistry()
    registry.install({"qwen-plus": engine, "alias": engine})
    gate = RecordingGate()
    return GenerationService(registry, gate, **kwargs), gate


def request(rid: str = "r1", **params: object) -> GenerationRequest:
    return GenerationRequest(rid, "qwen-plus", (Message("user", "hi"),),
                             params=RequestedParams(**params))  # type: ignore[arg-type]


async def test_complete_and_bill_once() -> None:
    engine = FakeEngine()
    service, gate = make_service(engine)
    run = await service.start(request(n=2), PRINCIPAL)
    done = await run.complete(None)
    assert [c.content for c in done.choices] == ["Hello from dashserve!",
                                                 "[1]Hello from dashserve!"]
    assert done.usage.output_tokens == 13 and not done.is_partial
    await run.aclose()
    await run.aclose()
    (record,) = gate.records
    assert (record.status_code, record.finish_reason, record.output_tokens) == (200, "stop", 13)
    assert record.ttft_ms is not None and service.num_inflight == 0
    assert engine.completed == ["r1"] and not engine.aborted


async def test_updates_stream_then_end() -> None:
    service, _ = make_service(FakeEngine())
    run = await service.start(request(max_tokens=2), PRINCIPAL)
    updates = [u async for u in run.stream(None)]
    await run.aclose()
    assert [u.delta.content for u in updates] == ["Hello", " from"]
    assert [u.is_last for u in updates] == [False, True]
    assert updates[-1].delta.finish_reason == "length"


async def test_close_mid_run_aborts_and_records_disconnect() -> None:
    engine = FakeEngine(token_delay_s=0.05)
    service, gate = make_service(engine)
    run = await service.start(request(), PRINCIPAL)
    assert await run.next_update(1.0) is not None
    await run.aclose(disconnected=True)
    assert engine.aborted == ["r1"] and not engine.active
    (record,) = gate.records
    assert (record.status_code, record.finish_reason, record.output_tokens) == (499, "abort", 1)


async def test_partial_completion() -> None:
    engine = FakeEngine(token_delay_s=0.05)
    service, gate = make_service(engine)
    run = await service.start(request(), PRINCIPAL)
    done = await run.complete(0.12)
    await run.aclose()
    assert done.is_partial and done.choices[0].finish_reason is None
    assert 0 < done.usage.output_tokens < 6
    assert engine.aborted == ["r1"]
    assert (gate.records[0].status_code, gate.records[0].finish_reason) == (200, None)


async def test_heartbeat_when_waiting() -> None:
    service, _ = make_service(FakeEngine(first_token_delay_s=0.2))
    run = await service.start(request(), PRINCIPAL)
    stream = run.stream(0.05)
    assert await stream.__anext__() is None
    await run.aclose()


async def test_engine_failure_becomes_internal_error() -> None:
    service, gate = make_service(FakeEngine(fail_after=1))
    run = await service.start(request(), PRINCIPAL)
    with pytest.raises(InternalError):
        await run.complete(None)
    await run.aclose()
    assert gate.records[0].status_code == 500


async def test_engine_validation_becomes_invalid_request() -> None:
    service, gate = make_service(FakeEngine(fail_with=InvalidRequest("bad x", param="x"),
                                            fail_after=0))
    run = await service.start(request(), PRINCIPAL)
    with pytest.raises(InvalidRequest) as info:
        await run.complete(None)
    await run.aclose()
    assert info.value.param == "x" and gate.records[0].status_code == 400


async def test_refusals_happen_before_admission() -> None:
    service, gate = make_service(FakeEngine())
    with pytest.raises(InvalidRequest):
        await service.start(GenerationRequest("r1", "qwen-plus", (Message("user", "hi"),),
                                              tools=({"type": "x"},)), PRINCIPAL)
    with pytest.raises(InvalidRequest):
        await service.start(request(temperature=3.0), PRINCIPAL)
    assert gate.admissions == [] and gate.records == []


async def test_server_busy_per_engine() -> None:
    engine = FakeEngine(first_token_delay_s=5)
    service, _ = make_service(engine, max_inflight_per_engine=1)
    run = await service.start(request("a"), PRINCIPAL)
    with pytest.raises(ServerBusy):
        await service.start(GenerationRequest("b", "alias", (Message("user", "x"),)), PRINCIPAL)
    await run.aclose()
    second = await service.start(request("c"), PRINCIPAL)
    await second.aclose()


async def test_close_all_at_shutdown() -> None:
    engine = FakeEngine(first_token_delay_s=5)
    service, gate = make_service(engine)
    runs = [await service.start(request(f"r{i}"), PRINCIPAL) for i in range(3)]
    await asyncio.sleep(0)
    await service.close_all()
    assert sorted(engine.aborted) == ["r0", "r1", "r2"] and service.num_inflight == 0
    assert {(r.status_code, r.finish_reason) for r in gate.records} == {(503, "abort")}
    for run in runs:
        await run.aclose()
    assert len(gate.records) == 3


async def test_aclose_survives_cancellation() -> None:
    engine = FakeEngine(token_delay_s=0.05)
    service, gate = make_service(engine)
    run = await service.start(request(), PRINCIPAL)
    consuming = asyncio.Event()

    async def consumer() -> None:
        try:
            consuming.set()
            await run.complete(None)
        finally:
            await run.aclose(disconnected=True)

    task = asyncio.create_task(consumer())
    await consuming.wait()
    await until(lambda: "r1" in engine.active)  # cancelled mid-stream
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: gate.records)
    assert gate.records[0].status_code == 499 and engine.aborted == ["r1"]


async def start_early(service: GenerationService, gate: RecordingGate, engine: FakeEngine
                      ) -> tuple[asyncio.Task[GenerationRun], asyncio.Event]:
    """``service.start`` of r1 with a gate that expects to admit and has not answered yet;
    returns once the engine has the request, with the event that lets the gate answer."""
    gate.expects, gate.hold = True, asyncio.Event()
    task = asyncio.create_task(service.start(request(), PRINCIPAL))
    await until(lambda: [s.request_id for s in engine.submissions] == ["r1"])
    await until(lambda: gate.asked == 1)
    assert not task.done() and gate.admissions == []
    return task, gate.hold


async def test_a_run_expected_to_be_admitted_starts_while_it_is_admitted() -> None:
    engine = FakeEngine(token_delay_s=0.01)
    service, gate = make_service(engine)
    task, answer = await start_early(service, gate, engine)
    await asyncio.sleep(0.05)  # tokens arrive meanwhile; nothing is read before the admission
    assert not task.done()
    answer.set()
    run = await task
    done = await run.complete(None)
    await run.aclose()
    assert done.choices[0].content == "Hello from dashserve!"
    (record,) = gate.records
    assert (record.status_code, record.output_tokens) == (200, 6)
    assert record.request_id == gate.admissions[0].request_id == "r1"
    assert engine.completed == ["r1"] and service.num_inflight == 0


async def test_a_run_refused_after_it_started_is_aborted_and_billed_nothing() -> None:
    engine = FakeEngine(first_token_delay_s=5)
    service, gate = make_service(engine)
    gate.refuse_with = Throttled(retry_after_s=3.0)
    task, answer = await start_early(service, gate, engine)
    answer.set()
    with pytest.raises(Throttled):
        await task
    assert engine.aborted == ["r1"] and not engine.active
    assert gate.records == [] and service.num_inflight == 0


async def test_a_start_cancelled_while_admitted_aborts_its_run() -> None:
    engine = FakeEngine(first_token_delay_s=5)
    service, gate = make_service(engine)
    task, _ = await start_early(service, gate, engine)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.aborted == ["r1"] and gate.records == [] and service.num_inflight == 0


async def test_shutdown_while_a_run_is_admitted_bills_it_once_admitted() -> None:
    engine = FakeEngine(first_token_delay_s=5)
    service, gate = make_service(engine)
    task, answer = await start_early(service, gate, engine)
    await service.close_all()
    assert engine.aborted == ["r1"] and gate.records == []  # not admitted: nothing to bill
    answer.set()
    run = await task
    await run.aclose()
    (record,) = gate.records
    assert (record.status_code, record.finish_reason) == (503, "abort")


class QueuedEngine(FakeEngine):
    """A FakeEngine whose queue holds ``waiting`` requests."""

    def __init__(self, waiting: int) -> None:
        super().__init__()
        self.waiting = waiting

    def stats(self):  # type: ignore[no-untyped-def]
        import dataclasses

        return dataclasses.replace(super().stats(), num_waiting=self.waiting)


async def test_a_busy_model_does_not_refuse_requests_for_an_idle_one() -> None:
    registry = ModelRegistry()
    registry.install({"busy": QueuedEngine(waiting=8), "idle": QueuedEngine(waiting=0)})
    service = GenerationService(registry, RecordingGate(), max_waiting=8)

    def to(model: str) -> GenerationRequest:
        return GenerationRequest(f"r-{model}", model, (Message("user", "hi"),))

    with pytest.raises(ServerBusy) as info:
        await service.start(to("busy"), PRINCIPAL)
    assert info.value.status_code == 429
    run = await service.start(to("idle"), PRINCIPAL)
    assert (await run.complete(None)).choices[0].content
    await run.aclose()
