"""Audio clips for speech models: decoded with PyAV (FFmpeg) to 16 kHz mono, then log-mel
features as Qwen3-ASR's feature extractor computes them (torch's STFT, a Slaney mel bank;
no torchaudio, no librosa).

``decode_audio`` refuses what is not a playable clip (undecodable or truncated data, no audio
stream, zero length, silence only) and anything past the caps (bytes are capped by the media
sources; duration here). Every refusal is a 400 naming the part. Decoding is CPU-bound: run
it off the event loop.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np
import torch

from dashserve.errors import InvalidRequest

SAMPLE_RATE = 16_000
HOP = 160  # samples per mel frame (10 ms)
N_FFT = 400
MIN_SAMPLES = 8_000  # shorter clips are zero-padded to half a second, as the extractor does
MAX_DURATION_S = 180.0  # seconds of audio a request may send
SILENCE_PEAK = 1e-4  # a clip whose samples never reach this (-80 dBFS) holds no speech


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    duration_s: float


def _refuse(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {why}", param=where)


def decode_audio(data: bytes, where: str = "audio",
                 max_duration_s: float = MAX_DURATION_S) -> DecodedAudio:
    """The clip in ``data`` (mp3, wav, flac, ogg, m4a/aac, ...) as 16 kHz mono float32."""
    if not data:
        raise _refuse(where, "the audio is empty")
    parts: list[np.ndarray] = []
    total = 0
    limit = int(max_duration_s * SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise _refuse(where, "the file holds no audio stream; send an audio file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    parts.append(chunk)
                    total += chunk.size
                if total > limit:
                    raise _refuse(where, f"the audio lasts more than the "
                                         f"{max_duration_s:.0f} s allowed")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except InvalidRequest:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise _refuse(where, "the data is not decodable audio") from exc
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise _refuse(where, "the audio has no samples")
    if samples.size > limit:
        raise _refuse(where, f"the audio lasts more than the {max_duration_s:.0f} s allowed")
    if not np.isfinite(samples).all() or float(np.abs(samples).max()) < SILENCE_PEAK:
        raise _refuse(where, "the audio is silent")
    return DecodedAudio(samples, samples.size / SAMPLE_RATE)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    log = hz >= 1000.0
    mel[log] = 15.0 + np.log(hz[log] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log = mel >= 15.0
    hz[log] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log] - 15.0))
    return hz


@lru_cache(maxsize=4)
def mel_filters(num_mel_bins: int) -> torch.Tensor:
    """[num_mel_bins, N_FFT // 2 + 1] triangular filters from 0 to 8 kHz, Slaney-normalised
    (each filter's area is constant)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mel_edges = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0],
                            num_mel_bins + 2)
    edges = _mel_to_hz(mel_edges)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    bank = np.maximum(0.0, np.minimum(down, up))
    bank *= (2.0 / (edges[2:num_mel_bins + 2] - edges[:num_mel_bins]))[None, :]
    return torch.from_numpy(bank.T.astype(np.float32))


def num_frames(num_samples: int, min_samples: int = MIN_SAMPLES) -> int:
    """Real mel frames of a clip of ``num_samples`` samples (after the minimum length: half
    a second for Qwen3-ASR, none for Qwen2-Audio's Whisper extractor)."""
    return -(-max(num_samples, min_samples) // HOP)


def log_mel(samples: np.ndarray, num_mel_bins: int = 128, chunk_frames: int = 100,
            min_samples: int = MIN_SAMPLES) -> tuple[torch.Tensor, int]:
    """([num_mel_bins, frames padded to whole chunks] float32, real frames).

    The clip is zero-padded past its last chunk before the STFT, so frames near its end see
    silence after it, as they do in the reference extractor (which pads every clip to 30 s);
    the values are the same as that extractor's for clips up to 30 s."""
    frames = num_frames(samples.size, min_samples)
    chunks = -(-frames // chunk_frames)
    # Qwen2-Audio's chunk is the extractor's whole 30 s window: padded to it exactly (a clip
    # filling it sees its own reflection past its end, as there)
    whole = chunk_frames * HOP >= 30 * SAMPLE_RATE
    padded = np.zeros((chunks + (0 if whole else 1)) * chunk_frames * HOP, np.float32)
    padded[:samples.size] = samples
    wave = torch.from_numpy(padded)
    stft = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(num_mel_bins) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    feats = ((log_spec + 4.0) / 4.0)[:, :chunks * chunk_frames].contiguous()
    return feats, frames


def audio_hash(samples: np.ndarray) -> str:
    """sha256 of the decoded samples: keys the prefix cache and the encoder cache."""
    h = hashlib.sha256(b"audio16k:")
    h.update(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return h.hexdigest()


def billed_seconds(duration_s: float) -> int:
    """``usage.seconds``: the decoded duration, rounded up to whole seconds."""
    return max(1, math.ceil(duration_s - 1e-9))
