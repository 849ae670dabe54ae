"""AudioConfig: the audio encoder of a Qwen3-ASR or Qwen2-Audio checkpoint, read from its
config.json (transformers' layout: ``audio_config``, ``text_config``, ``audio_token_id`` or
``audio_token_index``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashserve.contracts.audio_tokens import audio_token_count

AUDIO_ARCHITECTURES = {"Qwen3ASRForConditionalGeneration": "qwen3-asr",
                       "Qwen2AudioForConditionalGeneration": "qwen2-audio"}
# the decoder each audio family wraps
AUDIO_TEXT_ARCHITECTURES = {"Qwen3ASRForConditionalGeneration": "Qwen3ForCausalLM",
                            "Qwen2AudioForConditionalGeneration": "Qwen2ForCausalLM"}

# Qwen3-ASR's audio tokens, at the ids its published tokenizer gives them
AUDIO_START_TOKEN_ID = 151669  # <|audio_start|>
AUDIO_END_TOKEN_ID = 151670  # <|audio_end|>
AUDIO_PAD_TOKEN_ID = 151676  # <|audio_pad|>
ASR_TEXT_TOKEN_ID = 151704  # <asr_text>: ends "language <Name>" and starts the transcript

# Qwen2-Audio's audio tokens, where its published tokenizer puts them (the ids Qwen3's table
# gives <|object_ref_start|>, <|object_ref_end|> and <|box_start|>): transformers 5.25's
# Qwen2AudioConfig defaults audio_token_index to 151646, and Qwen2.5-Omni's config (the same
# tokenizer family) audio_start_token_id / audio_end_token_id to 151647 / 151648
# (src/transformers/models/qwen2_audio/configuration_qwen2_audio.py,
# src/transformers/models/qwen2_5_omni/configuration_qwen2_5_omni.py).
QWEN2_AUDIO_TOKEN_ID = 151646  # <|AUDIO|>
QWEN2_AUDIO_BOS_TOKEN_ID = 151647  # <|audio_bos|>
QWEN2_AUDIO_EOS_TOKEN_ID = 151648  # <|audio_eos|>
QWEN2_AUDIO_MAX_FRAMES = 3000  # the Whisper extractor's 30 s window, the encoder's whole input


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Shape of the audio encoder and of its projector. Qwen3-ASR: three stride-2
    convolutions per one-second chunk of mel frames, then a transformer attending within
    windows of chunks. Qwen2-Audio (Whisper's encoder): two convolutions over one 30 s window
    (``chunk_frames`` 3000), learned positions, full attention, pooling by 2, one linear
    projector."""

    family: str  # "qwen3-asr" or "qwen2-audio"
    num_mel_bins: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    d_model: int
    output_dim: int
    n_window: int  # half the mel frames of one chunk
    n_window_infer: int  # mel frames one attention window spans (a multiple of 2 * n_window)
    downsample_hidden_size: int
    max_positions: int  # sinusoid table rows: tokens one chunk yields at most
    activation: str
    audio_token_id: int
    audio_start_token_id: int = AUDIO_START_TOKEN_ID
    audio_end_token_id: int = AUDIO_END_TOKEN_ID
    asr_text_token_id: int = ASR_TEXT_TOKEN_ID

    @property
    def chunk_frames(self) -> int:
        return 2 * self.n_window

    def token_count(self, frames: int) -> int:
        """Placeholder tokens a clip of ``frames`` real mel frames becomes."""
        return audio_token_count(frames, self.chunk_frames, self.family)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], architecture: str) -> AudioConfig:
        a = cfg["audio_config"]
        if AUDIO_ARCHITECTURES[architecture] == "qwen2-audio":
            positions = int(a.get("max_source_positions", 1500))
            return cls(
                family="qwen2-audio",
                num_mel_bins=int(a.get("num_mel_bins", 128)),
                num_layers=int(a["encoder_layers"]),
                num_heads=int(a["encoder_attention_heads"]),
                ffn_dim=int(a["encoder_ffn_dim"]),
                d_model=int(a["d_model"]),
                output_dim=int(cfg["text_config"]["hidden_size"]),
                n_window=positions,  # one window of 2 * positions frames (30 s)
                n_window_infer=2 * positions,
                downsample_hidden_size=0,
                max_positions=positions,
                activation=str(a.get("activation_function", "gelu")),
                audio_token_id=int(cfg.get("audio_token_index",
                                           cfg.get("audio_token_id", QWEN2_AUDIO_TOKEN_ID))),
                audio_start_token_id=QWEN2_AUDIO_BOS_TOKEN_ID,
                audio_end_token_id=QWEN2_AUDIO_EOS_TOKEN_ID,
                asr_text_token_id=-1,
            )
        return cls(
            family=AUDIO_ARCHITECTURES[architecture],
            num_mel_bins=int(a.get("num_mel_bins", 128)),
            num_layers=int(a["encoder_layers"]),
            num_heads=int(a["encoder_attention_heads"]),
            ffn_dim=int(a["encoder_ffn_dim"]),
            d_model=int(a["d_model"]),
            output_dim=int(a["output_dim"]),
            n_window=int(a.get("n_window", 50)),
            n_window_infer=int(a.get("n_window_infer", 800)),
            downsample_hidden_size=int(a.get("downsample_hidden_size", 480)),
            max_positions=int(a.get("max_position_embeddings", 13)),
            activation=str(a.get("activation_function", "gelu")),
            audio_token_id=int(cfg.get("audio_token_id", AUDIO_PAD_TOKEN_ID)),
        )


def audio_text_config(cfg: dict[str, Any], architecture: str) -> dict[str, Any]:
    """The decoder's config as a flat text-model dict."""
    text = dict(cfg.get("text_config") or {})
    text["architectures"] = [AUDIO_TEXT_ARCHITECTURES[architecture]]
    text.setdefault("model_type", "qwen2" if AUDIO_ARCHITECTURES[architecture] == "qwen2-audio"
                    else "qwen3")
    if "tie_word_embeddings" in cfg:
        text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
    for key in ("torch_dtype", "dtype"):
        if key in cfg:
            text.setdefault(key, cfg[key])
    if "eos_token_id" in cfg and "eos_token_id" not in text:
        text["eos_token_id"] = cfg["eos_token_id"]
    return text
