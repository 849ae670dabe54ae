"""The vision part of a step: encode the images a prefill chunk reaches (once per image, via
the encoder cache), splice their rows into the input embeddings at the placeholder tokens the
chunk covers, and build the chunk's M-RoPE positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.engine.encoder_cache import Encoded, EncoderCache
from dashserve.engine.sequence import Sequence
from dashserve.model.qwen import DeepStack
from dashserve.model.qwen_audio import QwenAudioForConditionalGeneration
from dashserve.model.qwen_vl import QwenVLForConditionalGeneration


@dataclass(frozen=True, slots=True)
class MediaSpan:
    """Tokens ``start:end`` of ``seq`` sit at batch row ``row`` onwards."""

    row: int
    seq: Sequence
    start: int
    end: int


def rope_positions(seq: Sequence, start: int, end: int) -> torch.Tensor:
    """[3, end - start] positions of tokens ``start:end`` of a sequence: its M-RoPE positions
    within the prompt, token index + delta beyond (and everywhere for text prompts)."""
    parts = []
    mrope = seq.mrope_positions
    if mrope is not None and start < mrope.shape[1]:
        parts.append(mrope[:, start:min(end, mrope.shape[1])])
        start = min(end, mrope.shape[1])
    if start < end:
        parts.append(torch.arange(start + seq.mrope_delta, end + seq.mrope_delta).expand(3, -1))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class VisionStep:
    """Per-runner state for vision (and speech) models: the encoder cache and a count of
    encoded items."""

    def __init__(
        self, model: QwenVLForConditionalGeneration | QwenAudioForConditionalGeneration,
        cache_tokens: int,
    ) -> None:
        self.model = model
        self.cache = EncoderCache(cache_tokens)
        self.num_encoded = 0  # items the vision encoder has run on

    def inputs(
        self, input_ids: torch.Tensor, spans: list[MediaSpan]
    ) -> tuple[torch.Tensor | None, DeepStack | None]:
        """Input embeddings with the encoder's rows spliced in, and the DeepStack rows; (None,
        None) when no chunk of the step covers a placeholder token."""
        overlaps: list[tuple[MultiModalInput, int, int, int]] = []
        for span in spans:
            for item in span.seq.mm_inputs:
                lo = max(span.start, item.offset)
                hi = min(span.end, item.offset + item.length)
                if lo < hi:
                    overlaps.append((item, lo - item.offset, hi - item.offset,
                                     span.row + lo - span.start))
        if not overlaps:
            return None, None
        encoded = self._encode([item for item, *_ in overlaps])
        embeds = self.model.model.embed_tokens(input_ids)
        rows: list[torch.Tensor] = []
        deep: list[list[torch.Tensor]] = []
        for item, lo, hi, row in overlaps:
            merged, stack = encoded[item.content_hash]
            embeds[row:row + hi - lo] = merged[lo:hi].to(embeds.dtype)
            if stack:
                rows.append(torch.arange(row, row + hi - lo, device=embeds.device))
                deep = deep or [[] for _ in stack]
                for layer, part in zip(deep, stack, strict=True):
                    layer.append(part[lo:hi])
        deepstack = DeepStack(torch.cat(rows), [torch.cat(d) for d in deep]) if rows else None
        return embeds, deepstack

    def _encode(self, items: list[MultiModalInput]) -> dict[str, Encoded]:
        """Each item's encoder output, from the cache or from one packed encoder pass."""
        found: dict[str, Encoded] = {}
        todo: dict[str, MultiModalInput] = {}
        for item in items:
            key = item.content_hash
            if key in found or key in todo:
                continue
            hit = self.cache.get(key)
            if hit is not None:
                found[key] = hit
            else:
                todo[key] = item
        if todo:
            batch = list(todo.values())
            outs: list[Encoded]
            if isinstance(self.model, QwenAudioForConditionalGeneration):
                outs = [(rows, []) for rows in self.model.encode_audio(
                    [it.pixel_values for it in batch], [it.audio_frames for it in batch])]
            else:
                outs = self.model.encode([it.pixel_values for it in batch],
                                         [it.grid_thw for it in batch])
            self.num_encoded += len(batch)
            for item, out in zip(batch, outs, strict=True):
                found[item.content_hash] = out
                self.cache.put(item.content_hash, out)
        return found
