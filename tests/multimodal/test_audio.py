"""Audio decoding with PyAV (formats, resampling, refusals) and the log-mel front end."""

from __future__ import annotations

import numpy as np
import pytest

from dashserve.errors import InvalidRequest
from dashserve.multimodal.audio import (
    billed_seconds,
    decode_audio,
    log_mel,
    mel_filters,
    num_frames,
)
from tests.utils.audio import FORMATS, encode, tone
from tests.utils.clips import video_clip


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_formats_decode_to_16k_mono(fmt: str) -> None:
    clip = decode_audio(encode(tone(1.5), fmt))
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert 1.45 <= clip.duration_s <= 1.6  # encoders may pad a frame
    assert 0.2 < float(np.abs(clip.samples).max()) < 0.6


def test_other_rates_are_resampled() -> None:
    clip = decode_audio(encode(tone(2.0, rate=44100), "wav", rate=44100))
    assert clip.samples.size == 32000
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(int(spectrum.argmax()) / 2.0 - 440) < 2  # the tone survives at 440 Hz


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 4, "not decodable"),
    (encode(np.zeros(16000, np.float32)), "silent"),
    (video_clip(0.5, 10), "no audio stream"),
])
def test_bad_audio_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why) as info:
        decode_audio(data, "input.messages[0].content[0]")
    assert info.value.param == "input.messages[0].content[0]"


def test_duration_cap() -> None:
    data = encode(tone(3.0))
    assert decode_audio(data, max_duration_s=3.5).duration_s == 3.0
    with pytest.raises(InvalidRequest, match="more than the 2 s allowed"):
        decode_audio(data, max_duration_s=2.0)


def test_log_mel_shapes_and_bank() -> None:
    bank = mel_filters(128)
    assert bank.shape == (128, 201) and float(bank.min()) >= 0.0
    assert all(float(row.max()) > 0 for row in bank)  # every filter covers some bin
    feats, frames = log_mel(tone(1.01))
    assert frames == num_frames(16160) == 101 and feats.shape == (128, 200)
    short, n = log_mel(tone(0.1))  # padded to half a second, as the reference does
    assert n == 50 and short.shape == (128, 100)
    assert billed_seconds(1.0) == 1 and billed_seconds(1.01) == 2 and billed_seconds(0.2) == 1
