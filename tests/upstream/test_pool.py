"""A pool over fake upstream processes: affinity, least outstanding, ejection and probing
back, retries only before the first event, disconnects closing the upstream stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import InvalidRequest, ModelUnavailable, ServerBusy, UnsupportedFeature
from dashserve.upstream.pool import Pool
from tests.upstream.conftest import FakeUpstream, until

PARAMS = SamplingParams(max_tokens=8, temperature=0.0)


async def run(pool: Pool, prompt: list[int], request_id: str = "r",
              params: SamplingParams = PARAMS) -> list[EngineEvent]:
    return [e async for e in pool.submit(EngineRequest(request_id, prompt, params))]


def prefix(seed: int, n: int = 40) -> list[int]:
    return [2000 + (seed * 31 + i) % 3000 for i in range(n)]


@pytest.mark.parametrize("kind", ["llamacpp", "vllm", "sglang"])
async def test_requests_come_back_as_engine_events_with_exact_usage(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool],
        kind: str) -> None:
    (up,) = fake_upstreams(1, num_tokens=5)
    pool = make_pool([up.url], kind=kind)
    try:
        events = await run(pool, prefix(1))
    finally:
        await pool.shutdown()
    last = events[-1]
    assert last.finished and last.finish_reason is FinishReason.STOP
    ids = [t for e in events for t in e.token_ids]
    assert len(ids) == 5 and last.num_output_tokens == 5 and last.num_prompt_tokens == 40
    text = "".join(e.text for e in events)
    assert text == pool.tokenizer.decode(ids, skip_special_tokens=True)
    body = up.stats()["bodies"][-1]
    assert body.get("prompt", body.get("input_ids")) == prefix(1)  # token ids, not text


async def test_repeated_prefixes_land_on_one_endpoint_and_hit_its_cache(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(3)
    pool = make_pool([u.url for u in ups])
    try:
        cached = []
        for i in range(6):
            events = await run(pool, prefix(7) + [100 + i] * 8, f"same-{i}")
            cached.append(events[-1].num_cached_tokens)
        counts = sorted(u.stats()["requests"] for u in ups)
        assert counts == [0, 0, 6]
        assert cached[0] == 0 and all(c >= 40 for c in cached[1:])
        before = [u.stats()["requests"] for u in ups]
        for i in range(12):  # different prefixes spread over the pool
            await run(pool, prefix(100 + i), f"other-{i}")
        spread = [u.stats()["requests"] - b for u, b in zip(ups, before, strict=True)]
        assert sum(spread) == 12 and sum(1 for n in spread if n) >= 2
    finally:
        await pool.shutdown()


async def test_short_prompts_go_to_the_least_outstanding_endpoint(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(3)
    for u in ups:
        u.mode(hold=True)
    pool = make_pool([u.url for u in ups])
    try:
        tasks = [asyncio.create_task(run(pool, [5, 6, 7], f"short-{i}")) for i in range(6)]
        await until(lambda: sum(u.stats()["active"] for u in ups) == 6, what="6 held streams")
        assert [u.stats()["active"] for u in ups] == [2, 2, 2]
        assert [e.num_outstanding for e in pool.endpoints] == [2, 2, 2]
        for u in ups:
            u.mode(hold=False)
        results = await asyncio.gather(*tasks)
        assert all(r[-1].finished for r in results)
    finally:
        await pool.shutdown()


async def test_affinity_yields_to_load(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(2)
    for u in ups:
        u.mode(hold=True)
    pool = make_pool([u.url for u in ups])
    try:
        tasks = [asyncio.create_task(run(pool, prefix(3) + [i], f"hot-{i}")) for i in range(8)]
        await until(lambda: sum(u.stats()["active"] for u in ups) == 8, what="8 held streams")
        active = sorted(u.stats()["active"] for u in ups)
        assert active[0] >= 2 and active[1] <= 5  # bounded load: 1.25 x the mean
        for u in ups:
            u.mode(hold=False)
        await asyncio.gather(*tasks)
    finally:
        await pool.shutdown()


async def test_failing_endpoint_is_taken_out_and_probed_back(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    bad, good = fake_upstreams(2)
    bad.mode(fail=500)
    pool = make_pool([bad.url, good.url])
    try:
        # every request succeeds: the retry goes to the other endpoint. Each prompt lands by
        # its hash, so go on until one has been tried on the failing endpoint, then 6 more
        sent = 0
        while sent < 64 and not bad.stats()["requests"]:
            events = await run(pool, prefix(sent), f"r{sent}")
            assert events[-1].finished
            sent += 1
        for i in range(sent, sent + 6):
            events = await run(pool, prefix(i), f"r{i}")
            assert events[-1].finished
        assert bad.stats()["requests"] == 1  # tried once, then out of rotation
        assert good.stats()["requests"] == sent + 6
        assert not pool.endpoints[0].is_healthy
        bad.mode(fail=None)
        await until(lambda: pool.endpoints[0].is_healthy, what="probe back")
    finally:
        await pool.shutdown()


async def test_no_retry_once_the_first_event_was_handed_on(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(2, num_tokens=200, token_delay_ms=20)
    pool = make_pool([u.url for u in ups])
    try:
        events = pool.submit(EngineRequest("r", prefix(9), SamplingParams(max_tokens=200)))
        first = await events.__anext__()
        assert first.token_ids
        serving = next(u for u in ups if u.stats()["active"] == 1)
        other = next(u for u in ups if u is not serving)
        serving.kill()
        with pytest.raises(ModelUnavailable):
            async for _ in events:
                pass
        assert other.stats()["requests"] == 0  # not retried after the first byte
        # a new request is routed to the survivor right away
        after = await run(pool, prefix(9), "after")
        assert after[-1].finished and other.stats()["requests"] == 1
    finally:
        await pool.shutdown()


async def test_refused_connection_before_the_first_event_is_retried(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    dead, alive = fake_upstreams(2)
    dead.kill()
    pool = make_pool([dead.url, alive.url])
    try:
        # each prompt's endpoint is a coin toss (rendezvous hash of the prompt and the
        # random ports): send until one lands on the dead endpoint (20 misses: 1 in 10^6)
        results = []
        for i in range(20):
            results.append(await run(pool, prefix(i), f"r{i}"))
            if not pool.endpoints[0].is_healthy:
                break
        assert not pool.endpoints[0].is_healthy
        assert all(r[-1].finished for r in results)
        assert alive.stats()["requests"] == len(results)
    finally:
        await pool.shutdown()


async def test_leaving_the_stream_closes_the_upstream_request(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1, num_tokens=500, token_delay_ms=20)
    pool = make_pool([up.url])
    try:
        events = pool.submit(EngineRequest("r", prefix(2), SamplingParams(max_tokens=500)))
        await events.__anext__()
        await events.aclose()  # what serving does when the client goes away
        await until(lambda: up.stats()["disconnected"] == 1, timeout_s=5, what="disconnect")
        assert up.stats()["active"] == 0 and pool.endpoints[0].num_outstanding == 0
    finally:
        await pool.shutdown()


async def test_stop_string_ends_the_request_at_the_front_and_closes_the_stream(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1, num_tokens=300, token_delay_ms=5)
    pool = make_pool([up.url])
    try:
        full = await run(pool, prefix(4), "full", SamplingParams(max_tokens=6))
        text = "".join(e.text for e in full)
        stop = text[len(text) // 2: len(text) // 2 + 2]
        cut = text[: text.index(stop)]
        events = await run(pool, prefix(4), "stop",
                           SamplingParams(max_tokens=300, stop=(stop,)))
        assert "".join(e.text for e in events) == cut
        assert events[-1].finish_reason is FinishReason.STOP
        assert events[-1].num_output_tokens < 300
        await until(lambda: up.stats()["disconnected"] == 1, timeout_s=5, what="disconnect")
    finally:
        await pool.shutdown()


async def test_openai_text_kind_passes_text_and_takes_usage_from_upstream(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1, num_tokens=5)
    pool = make_pool([up.url], kind="openai")
    try:
        events = await run(pool, prefix(1), params=SamplingParams(max_tokens=8, stop=("zz",)))
    finally:
        await pool.shutdown()
    body = up.stats()["bodies"][-1]
    assert isinstance(body["prompt"], str) and body["stop"] == ["zz"]
    assert body["prompt"] == pool.tokenizer.decode(prefix(1))
    last = events[-1]
    assert last.finished and last.num_output_tokens == 5
    assert last.num_prompt_tokens == len(body["prompt"])  # the fake's count: upstream usage
    assert "".join(e.text for e in events).startswith("t1")


@pytest.mark.parametrize("kind", ["llamacpp", "vllm", "sglang"])
async def test_thinking_budget_closes_the_block_and_continues_like_the_engine(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool],
        kind: str) -> None:
    (up,) = fake_upstreams(1, num_tokens=20, token_delay_ms=5)
    pool = make_pool([up.url], kind=kind)
    params = SamplingParams(max_tokens=4, thinking_budget=3, starts_in_thinking=True)
    try:
        events = await run(pool, prefix(5), params=params)
    finally:
        await pool.shutdown()
    close = list(pool.tokenizer.encode("\n</think>\n\n"))
    ids = [t for e in events for t in e.token_ids]
    assert ids[3:3 + len(close)] == close  # forced right after the budget's 3rd token
    last = events[-1]
    assert last.num_reasoning_tokens == 3 and last.finish_reason is FinishReason.LENGTH
    assert last.num_output_tokens == 3 + len(close) + 4 == len(ids)
    assert last.num_prompt_tokens == 40  # the continuation's longer prompt is not billed
    first, second = up.stats()["bodies"][-2:]
    assert second.get("prompt", second.get("input_ids")) == prefix(5) + ids[:3 + len(close)]
    assert "</think>" in "".join(e.text for e in events)
    await until(lambda: up.stats()["disconnected"] == 2, timeout_s=5, what="both legs closed")


async def test_busy_upstreams_give_429_and_stay_in_rotation(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(2)
    for u in ups:
        u.mode(fail=429)
    pool = make_pool([u.url for u in ups])
    try:
        with pytest.raises(ServerBusy) as info:
            await run(pool, prefix(1))
        assert info.value.status_code == 429
        assert [u.stats()["requests"] for u in ups] == [1, 1]  # each tried once
        assert all(e.is_healthy for e in pool.endpoints)
    finally:
        await pool.shutdown()


async def test_load_other_fronts_put_on_an_upstream_is_read_from_its_metrics(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    busy, idle = fake_upstreams(2)
    busy.mode(hold=True)
    other_front = make_pool([busy.url])
    pool = make_pool([busy.url, idle.url])
    try:
        held = [asyncio.create_task(run(other_front, [5, 6, 7], f"o{i}")) for i in range(4)]
        await until(lambda: busy.stats()["active"] == 4, what="4 requests of the other front")
        await pool.check_health()  # starts the probe task, which reads the metrics
        await until(lambda: pool.endpoints[0].num_external == 4, what="scraped load")
        for i in range(3):  # this front has nothing outstanding anywhere, yet avoids `busy`
            await run(pool, [8, 9, 10 + i], f"r{i}")
        assert idle.stats()["requests"] == 3
        busy.mode(hold=False)
        await asyncio.gather(*held)
    finally:
        await other_front.shutdown()
        await pool.shutdown()


async def test_a_stream_the_kind_cannot_follow_fails_as_the_upstream_s_fault(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    (up,) = fake_upstreams(1, num_tokens=3)
    pool = make_pool([up.url], kind="vllm")
    endpoint = pool.endpoints[0]

    def parse(data: object) -> None:
        raise ValueError("the upstream streams text without token_ids")

    monkeypatch.setattr(endpoint.dialect, "parse", parse)
    try:
        with pytest.raises(ModelUnavailable):
            await run(pool, prefix(3))
    finally:
        await pool.shutdown()


async def test_an_sglang_server_that_ignores_seeds_is_named_once_in_the_log(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool],
        caplog: pytest.LogCaptureFixture) -> None:
    loose, strict = fake_upstreams(2)
    strict.mode(deterministic=True)
    pool = make_pool([loose.url, strict.url], kind="sglang")
    try:
        with caplog.at_level("WARNING", logger="dashserve.upstream.endpoint"):
            await pool.check_health()  # starts the probe task, which reads /server_info
            await until(lambda: loose.stats()["info_reads"] == 1
                        and strict.stats()["info_reads"] == 1, what="both servers described")
            await asyncio.sleep(0.3)  # more probe rounds: neither is asked again
        assert loose.stats()["info_reads"] == strict.stats()["info_reads"] == 1
        warned = [r.getMessage() for r in caplog.records
                  if "--enable-deterministic-inference" in r.getMessage()]
        assert len(warned) == 1 and loose.url in warned[0] and strict.url not in warned[0]
    finally:
        await pool.shutdown()


async def test_a_seed_the_client_set_goes_only_to_sglang_servers_that_follow_it(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    """The default seed goes anywhere; a chosen one only where it makes answers repeatable,
    read from each server's description before the first such request is routed."""
    loose, strict = fake_upstreams(2, num_tokens=3)
    strict.mode(deterministic=True)
    pool = make_pool([loose.url, strict.url], kind="sglang", probe_interval_s=60)
    seeded = SamplingParams(temperature=0.7, max_tokens=3, seed=7, seed_requested=True)
    default = SamplingParams(temperature=0.7, max_tokens=3, seed=1234)
    try:
        # at once: the first seeded requests share each server's one description read
        await asyncio.gather(*(run(pool, prefix(100 + i), f"s{i}", seeded) for i in range(6)))
        assert (loose.stats()["requests"], strict.stats()["requests"]) == (0, 6)
        assert loose.stats()["info_reads"] == strict.stats()["info_reads"] == 1
        assert strict.stats()["bodies"][-1]["sampling_params"]["sampling_seed"] == 7
        # the default seed is routed as before: distinct prefixes spread over both servers
        # (each lands by its hash, so a few may all land on one: go on until one does not)
        for i in range(64):
            await run(pool, prefix(200 + i), f"d{i}", default)
            if loose.stats()["requests"]:
                break
        assert loose.stats()["requests"] == 1
        strict.kill()  # the one that follows seeds is down: unavailable, not refused
        with pytest.raises(ModelUnavailable) as down:
            await run(pool, prefix(300), "s-down", seeded)
        assert not isinstance(down.value, InvalidRequest)
    finally:
        await pool.shutdown()


async def test_a_seed_is_refused_when_no_server_of_the_pool_follows_it(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    (loose,) = fake_upstreams(1, num_tokens=3)
    pool = make_pool([loose.url], kind="sglang", probe_interval_s=60)
    try:
        with pytest.raises(UnsupportedFeature) as refused:
            await run(pool, prefix(1), "s", SamplingParams(max_tokens=3, seed=7,
                                                           seed_requested=True))
        assert (refused.value.status_code, refused.value.param) == (400, "seed")
        assert loose.stats()["requests"] == 0
        events = await run(pool, prefix(1), "d", SamplingParams(max_tokens=3, seed=1234))
        assert events[-1].finished and loose.stats()["requests"] == 1
    finally:
        await pool.shutdown()


async def test_kinds_without_a_description_are_not_asked_for_one(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1)
    pool = make_pool([up.url], kind="vllm")
    try:
        await pool.check_health()
        await asyncio.sleep(0.3)
        assert up.stats()["info_reads"] == 0
    finally:
        await pool.shutdown()
