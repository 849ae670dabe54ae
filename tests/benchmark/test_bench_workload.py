"""Benchmark prompts: exact token lengths under the bundled tokenizer, seeded and distinct."""

from __future__ import annotations

import pytest

from dashserve.benchmark.workload import PromptFactory, Workload, load_tokenizer
from dashserve.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def qwen_tokenizer() -> Tokenizer:
    return load_tokenizer()


@pytest.mark.parametrize("n", [1, 7, 256, 1000])
def test_user_message_has_exactly_n_tokens(qwen_tokenizer: Tokenizer, n: int) -> None:
    factory = PromptFactory(qwen_tokenizer, Workload(prompt_tokens=n, seed=3))
    for index in (-1, 0, 5):
        (user,) = factory.messages(index)
        assert user["role"] == "user"
        assert len(qwen_tokenizer.encode(user["content"])) == n


def test_shared_prefix_is_one_system_prompt_of_k_tokens(qwen_tokenizer: Tokenizer) -> None:
    factory = PromptFactory(qwen_tokenizer, Workload(prompt_tokens=32, shared_prefix_tokens=300))
    first, second = factory.messages(0), factory.messages(1)
    assert first[0]["role"] == "system" and first[0] == second[0]
    assert len(qwen_tokenizer.encode(first[0]["content"])) == 300
    assert first[1] != second[1]
    assert len(qwen_tokenizer.encode(second[1]["content"])) == 32


def test_prompts_are_seeded_and_distinct(qwen_tokenizer: Tokenizer) -> None:
    a = PromptFactory(qwen_tokenizer, Workload(prompt_tokens=64, seed=1))
    b = PromptFactory(qwen_tokenizer, Workload(prompt_tokens=64, seed=1))
    c = PromptFactory(qwen_tokenizer, Workload(prompt_tokens=64, seed=2))
    assert [a.messages(i) for i in range(3)] == [b.messages(i) for i in range(3)]
    assert a.messages(0) != c.messages(0)
    assert len({a.messages(i)[0]["content"] for i in range(20)}) == 20
    assert a.messages(0, warmup=True) != a.messages(0)


def test_bad_workloads_are_refused(qwen_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError):
        PromptFactory(qwen_tokenizer, Workload(prompt_tokens=0))
    with pytest.raises(ValueError):
        PromptFactory(qwen_tokenizer, Workload(shared_prefix_tokens=-1))
