"""The token-id wire between a front and a dashserve engine process: JSON shapes both ends share.

An engine process (``dashserve engine-serve``) answers over HTTP on these paths::

    GET  /v1/info          {"wire": 1, "model": ModelInfo, "tokenizer_id": sha256}
    GET  /v1/tokenizer     {"files": {name: text}, "tokenizer_id": sha256}
    GET  /v1/stats         EngineStats
    POST /v1/generate      {"request_id", "prompt_token_ids", "params": SamplingParams,
                            "mm_inputs": [MultiModalInput, ...] (images, videos; optional)}
                           -> 200, one JSON object a line: {"event": EngineEvent} ...
                              or {"error": {"kind", "param", "message"}} as the last line
    POST /v1/abort         {"request_id"}

With a shared secret every request carries ``Authorization: Bearer <secret>``. The front
renders prompts with the engine's own tokenizer files, so token counts stay exact; the
tokenizer id (a hash of those files) lets it check that every replica has the same one.
Only plain data crosses: this module knows nothing of HTTP.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from dashserve.contracts.engine_client import ModelInfo, VisionInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import (
    EngineEvent,
    EngineStats,
    FinishReason,
    TokenLogprob,
    TopLogprob,
)
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.errors import InvalidRequest, PromptTooLong

WIRE_VERSION = 1
# The files a front needs to render and count exactly what the engine will see.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


class WireError(ValueError):
    """A message that does not have the wire's shape (a version mismatch or a bug)."""


class RemoteEngineFailure(RuntimeError):
    """The engine process failed the request (its engine stopped or a step failed)."""


# ----- sampling parameters ----------------------------------------------------------------------


def params_to_wire(params: SamplingParams) -> dict[str, Any]:
    """SamplingParams as JSON; ``extra`` must hold JSON values only."""
    out = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    out["stop"] = list(params.stop)
    out["stop_token_ids"] = list(params.stop_token_ids)
    if params.structured is not None:
        out["structured"] = dataclasses.asdict(params.structured)
    return out


def params_from_wire(data: Mapping[str, Any]) -> SamplingParams:
    """Rebuilds SamplingParams (its own checks run again: InvalidRequest on bad values)."""
    known = {f.name for f in dataclasses.fields(SamplingParams)}
    unknown = set(data) - known
    if unknown:
        raise WireError(f"unknown sampling parameters: {sorted(unknown)}")
    values = dict(data)
    values["stop"] = tuple(values.get("stop") or ())
    values["stop_token_ids"] = tuple(int(i) for i in values.get("stop_token_ids") or ())
    structured = values.get("structured")
    if structured is not None:
        values["structured"] = StructuredOutputSpec(**structured)
    values["extra"] = dict(values.get("extra") or {})
    return SamplingParams(**values)


# ----- events -----------------------------------------------------------------------------------


def event_to_wire(event: EngineEvent) -> dict[str, Any]:
    """One EngineEvent as JSON (logprobs only when present)."""
    out: dict[str, Any] = {
        "request_id": event.request_id, "index": event.index, "token_ids": event.token_ids,
        "text": event.text,
        "finish_reason": event.finish_reason.value if event.finish_reason else None,
        "num_prompt_tokens": event.num_prompt_tokens,
        "num_output_tokens": event.num_output_tokens,
        "num_cached_tokens": event.num_cached_tokens, "finished": event.finished,
        "num_reasoning_tokens": event.num_reasoning_tokens,
        "num_cache_created_tokens": event.num_cache_created_tokens,
    }
    if event.logprobs is not None:
        out["logprobs"] = [dataclasses.asdict(lp) for lp in event.logprobs]
    return out


def event_from_wire(data: Mapping[str, Any]) -> EngineEvent:
    try:
        reason = data["finish_reason"]
        logprobs = data.get("logprobs")
        return EngineEvent(
            request_id=str(data["request_id"]), index=int(data["index"]),
            token_ids=[int(i) for i in data["token_ids"]], text=str(data["text"]),
            finish_reason=FinishReason(reason) if reason is not None else None,
            num_prompt_tokens=int(data["num_prompt_tokens"]),
            num_output_tokens=int(data["num_output_tokens"]),
            num_cached_tokens=int(data.get("num_cached_tokens", 0)),
            logprobs=None if logprobs is None else [_logprob(lp) for lp in logprobs],
            finished=bool(data.get("finished", False)),
            num_reasoning_tokens=int(data.get("num_reasoning_tokens", 0)),
            num_cache_created_tokens=int(data.get("num_cache_created_tokens", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed engine event: {exc}") from exc


def _logprob(data: Mapping[str, Any]) -> TokenLogprob:
    top = [TopLogprob(**t) for t in data.get("top_logprobs", ())]
    return TokenLogprob(token_id=data["token_id"], token=data["token"], bytes=data["bytes"],
                        logprob=data["logprob"], top_logprobs=top)


# ----- images and videos ----------------------------------------------------------------------


def mm_input_to_wire(item: MultiModalInput) -> dict[str, Any]:
    """An image or video ready for the encoder: its float32 patch tensor as base64."""
    pixels = item.pixel_values.detach().to("cpu", torch.float32).contiguous()
    return {"kind": item.kind, "shape": list(pixels.shape),
            "pixels": base64.b64encode(pixels.numpy().tobytes()).decode("ascii"),
            "grid_thw": list(item.grid_thw), "content_hash": item.content_hash,
            "offset": item.offset, "length": item.length,
            "second_per_grid_t": item.second_per_grid_t}


def mm_input_from_wire(data: Mapping[str, Any]) -> MultiModalInput:
    try:
        raw = bytearray(base64.b64decode(data["pixels"], validate=True))
        shape = [int(n) for n in data["shape"]]
        pixels = torch.frombuffer(raw, dtype=torch.float32).reshape(shape) if raw else \
            torch.zeros(shape, dtype=torch.float32)
        t, h, w = (int(n) for n in data["grid_thw"])
        kind = data["kind"]
        if kind not in ("image", "video"):
            raise ValueError(f"unknown media kind {kind!r}")
        return MultiModalInput(kind=kind, pixel_values=pixels, grid_thw=(t, h, w),
                               content_hash=str(data["content_hash"]),
                               offset=int(data["offset"]), length=int(data["length"]),
                               second_per_grid_t=float(data.get("second_per_grid_t", 0.0)))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise WireError(f"malformed image or video input: {exc}") from exc


# ----- errors -----------------------------------------------------------------------------------


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """What the engine raised, as the error line of a generate stream."""
    if isinstance(exc, PromptTooLong):
        return {"kind": "prompt_too_long", "param": exc.param, "message": exc.message}
    if isinstance(exc, InvalidRequest):
        return {"kind": "invalid_parameter", "param": exc.param, "message": exc.message}
    return {"kind": "engine", "param": None, "message": f"{type(exc).__name__}: {exc}"}


def error_from_wire(data: Mapping[str, Any]) -> Exception:
    """The exception the front raises for an error line (the same types a local engine
    raises, so the server answers the same DashScope error)."""
    kind, message = data.get("kind"), str(data.get("message", ""))
    param = str(data.get("param") or "")
    if kind == "prompt_too_long":
        return PromptTooLong(message, param=param or None)
    if kind == "invalid_parameter":
        return InvalidRequest(message, param=param or None)
    return RemoteEngineFailure(message)


# ----- model, stats, tokenizer ------------------------------------------------------------------


def model_info_to_wire(info: ModelInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


def model_info_from_wire(data: Mapping[str, Any]) -> ModelInfo:
    values = dict(data)
    vision = values.get("vision")
    if vision is not None:
        vision = dict(vision)
        vision["image_mean"] = tuple(vision["image_mean"])
        vision["image_std"] = tuple(vision["image_std"])
        values["vision"] = VisionInfo(**vision)
    return ModelInfo(**values)


def stats_to_wire(stats: EngineStats) -> dict[str, Any]:
    return dataclasses.asdict(stats)


def stats_from_wire(data: Mapping[str, Any]) -> EngineStats:
    known = {f.name for f in dataclasses.fields(EngineStats)}
    return EngineStats(**{k: int(v) for k, v in data.items() if k in known})


def tokenizer_id(files: Mapping[str, str]) -> str:
    """A hash naming the tokenizer files: equal ids render and count prompts alike."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode("utf-8") + b"\0")
    return digest.hexdigest()


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One line of a generate stream."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode_line(line: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise WireError(f"malformed line from the engine process: {exc}") from exc
    if not isinstance(message, dict):
        raise WireError("a line from the engine process must be a JSON object")
    return message
