"""The thinking markers: one definition that the tokenizer, the template, the engine's forced
close and serving's reasoning split all agree on."""

from __future__ import annotations

from dashserve.contracts.chat_format import (
    FORCED_THINK_CLOSE,
    THINK_END,
    THINK_START,
    ends_in_thinking,
    opens_thinking,
    think_token_ids,
)
from dashserve.tokenizer import Tokenizer
from tests.utils.fake_tokenizer import SPECIAL_IDS, FakeTokenizer
from tests.utils.reasoning import split_reasoning


def test_markers_are_single_qwen_tokens(tokenizer: Tokenizer) -> None:
    start, end = think_token_ids(tokenizer)
    assert (start, end) == (151667, 151668)
    assert tokenizer.encode(THINK_START) == [start] and tokenizer.encode(THINK_END) == [end]
    close = tokenizer.encode(FORCED_THINK_CLOSE)
    assert end in close and tokenizer.decode(close) == FORCED_THINK_CLOSE
    assert think_token_ids(FakeTokenizer()) == (SPECIAL_IDS["<think>"], SPECIAL_IDS["</think>"])


def test_a_forced_close_leaves_nothing_in_the_answer() -> None:
    # what a budget-capped sample streams: reasoning, the engine's close, then the answer
    text = "first idea\nsecond idea" + FORCED_THINK_CLOSE + "The answer is 4."
    assert split_reasoning(text, True) == ("first idea\nsecond idea", "The answer is 4.")


def test_thinking_prompts_end_inside_an_open_block(tokenizer: Tokenizer) -> None:
    messages = [{"role": "user", "content": "2+2?"}]
    thinking = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             enable_thinking=True)
    plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                          enable_thinking=False)
    assert not ends_in_thinking(plain)  # the template closes an empty block when not thinking
    assert ends_in_thinking(opens_thinking(thinking))
    assert opens_thinking(opens_thinking(thinking)) == opens_thinking(thinking)
    assert opens_thinking(plain) == plain + "<think>\n"
