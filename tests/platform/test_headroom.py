"""platform.headroom: when a key's next run may start before its admission is answered."""

from __future__ import annotations

from dashserve.platform.headroom import Headroom
from dashserve.platform.limits import LimitPolicy

POLICY = LimitPolicy(rpm=10, tpm=1000, max_concurrency=4)
RPM = LimitPolicy(rpm=10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_expected_of_a_key_never_admitted_here() -> None:
    room = Headroom()
    assert not room.ample("k", POLICY, 1)
    room.admitted("k", running=1, requests=1, tokens=10)
    assert room.ample("k", POLICY, 10) and not room.ample("other", POLICY, 10)


def test_each_limit_must_keep_half_its_room() -> None:
    room = Headroom()
    room.admitted("k", running=1, requests=4, tokens=100)
    assert room.ample("k", POLICY, 400)  # 5 of 10 requests, 500 of 1000 tokens, 2 of 4 slots
    assert not room.ample("k", POLICY, 401)
    room.admitted("k", running=1, requests=5, tokens=100)
    assert not room.ample("k", POLICY, 1)
    room.admitted("k", running=2, requests=1, tokens=0)
    assert not room.ample("k", POLICY, 1)
    assert room.ample("k", RPM, 10**6)  # only the limits the key has count


def test_admissions_being_asked_count_against_the_room() -> None:
    room = Headroom()
    room.admitted("k", running=0, requests=2, tokens=0)
    room.asking("k", 1)
    room.asking("k", 1)
    assert room.ample("k", RPM, 0)  # 2 + 2 being asked + this one: 5 of 10
    room.asking("k", 1)
    assert not room.ample("k", RPM, 0)
    for _ in range(3):
        room.asking("k", -1)
    assert room.ample("k", RPM, 0)


def test_counts_grow_stale_and_are_forgotten() -> None:
    clock = Clock()
    room = Headroom(fresh_s=5.0, clock=clock)
    room.admitted("k", running=1, requests=1, tokens=1)
    clock.now += 5.0
    assert room.ample("k", POLICY, 1)
    clock.now += 0.01
    assert not room.ample("k", POLICY, 1)
    room.admitted("k", running=1, requests=1, tokens=1)
    room.forget("k")  # a refusal
    assert not room.ample("k", POLICY, 1)


def test_released_slots_give_room_back() -> None:
    room = Headroom()
    room.admitted("k", running=2, requests=1, tokens=1)
    assert not room.ample("k", POLICY, 1)
    room.released("k")
    assert room.ample("k", POLICY, 1)
    room.released("k")
    room.released("k")  # never below zero
    room.admitted("k", running=2, requests=1, tokens=1)
    assert not room.ample("k", POLICY, 1)
