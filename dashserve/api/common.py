"""Wire helpers both APIs share: content flattening, stop lists, logprobs, request ids."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from dashserve.contracts.outputs import TokenLogprob
from dashserve.errors import InvalidRequest, UnsupportedFeature
from dashserve.serving.request import AudioPart, ImagePart, Message, Segment, StopItem, VideoPart

# Content-part keys (native) and types (OpenAI) that carry media we cannot read yet
# (images are read: see ``image_part``).
MEDIA_KEYS = ("image", "video", "audio")
MEDIA_TYPES = MappingProxyType({
    "image_url": "image", "input_audio": "audio", "video_url": "video", "video": "video",
    "image": "image", "audio": "audio", "file": "file"})
LOGPROB_FLOOR = -9999.0  # stands in for -inf, which JSON cannot carry
MESSAGE_EXTRAS = ("name", "tool_calls", "tool_call_id", "reasoning_content")


def given(body: Any, names: Sequence[str]) -> dict[str, Any]:
    """The values of ``names`` in a request model, declared fields or extra keys (None:
    not given), without dumping the whole model."""
    fields, extra = type(body).model_fields, body.model_extra or {}
    return {name: getattr(body, name) if name in fields else extra.get(name) for name in names}


def resolves_oss(headers: Mapping[str, str]) -> bool:
    """``X-DashScope-OssResourceResolve: enable``: ``oss://`` keys of uploads may be read."""
    return headers.get("x-dashscope-ossresourceresolve", "").lower() == "enable"


def media_refusal(kind: str, where: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"{kind} input is not available on this server yet; send text content only",
        param=where)


def cache_mark_end(content: Any, where: str) -> int | None:
    """Where the last part with ``cache_control`` ends in the flattened text, or None.

    Only ``{"type": "ephemeral"}`` markers exist; any other value is refused.
    """
    if not isinstance(content, list):
        return None
    end: int | None = None
    offset = 0
    for i, part in enumerate(content):
        text = part.get("text") if isinstance(part, dict) else None
        offset += len(text) if isinstance(text, str) else 0
        marker = part.get("cache_control")
        if marker is None:
            continue
        if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
            raise InvalidRequest(
                f"{where}[{i}].cache_control must be {{\"type\": \"ephemeral\"}}",
                param=f"{where}[{i}].cache_control")
        end = offset
    return end


def _pixels(part: dict[str, Any], here: str) -> dict[str, int | None]:
    """Per-image ``min_pixels``/``max_pixels`` (integers when given)."""
    out: dict[str, int | None] = {}
    for key in ("min_pixels", "max_pixels"):
        value = part.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"{here}.{key} must be an integer", param=f"{here}.{key}")
        out[key] = value
    return out


def image_part(part: dict[str, Any], here: str) -> ImagePart | None:
    """The image of a native ``{"image": ...}`` or OpenAI ``{"type": "image_url", ...}``
    part, or None when the part holds no image."""
    if part.get("type") == "image_url" or "image_url" in part:
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
    elif "image" in part and part.get("type", "image") == "image":
        url = part.get("image")
    else:
        return None
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{here} must give the image as a non-empty string (a URL, a "
                             "data URL or an oss:// key)", param=here)
    rotate = part.get("enable_rotate", False)
    if not isinstance(rotate, bool):
        raise InvalidRequest(f"{here}.enable_rotate must be a boolean",
                             param=f"{here}.enable_rotate")
    return ImagePart(url, here, **_pixels(part, here), rotate=rotate)


def _video_source(value: Any, here: str) -> str | tuple[str, ...]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise InvalidRequest(f"{here} must give the video as a non-empty string (a video file) or "
                         "a non-empty list of frame images", param=here)


def video_part(part: dict[str, Any], here: str) -> VideoPart | None:
    """The video of a native ``{"video": ...}`` or OpenAI ``{"type": "video_url", ...}`` /
    ``{"type": "video", "video": [...]}`` part, or None when the part holds no video."""
    if part.get("type") == "video_url" or "video_url" in part:
        url = part.get("video_url")
        source = _video_source(url.get("url") if isinstance(url, dict) else url, here)
        if not isinstance(source, str):
            raise InvalidRequest(f"{here}: video_url gives a video file's URL", param=here)
    elif "video" in part and part.get("type", "video") == "video":
        source = _video_source(part.get("video"), here)
    else:
        return None
    fps = part.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))):
        raise InvalidRequest(f"{here}.fps must be a number", param=f"{here}.fps")
    bounds = _pixels(part, here)
    total = part.get("total_pixels")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        raise InvalidRequest(f"{here}.total_pixels must be an integer",
                             param=f"{here}.total_pixels")
    return VideoPart(source, here, fps, bounds["min_pixels"], bounds["max_pixels"], total)


def audio_part(part: dict[str, Any], here: str) -> AudioPart | None:
    """The clip of a native ``{"audio": ...}`` or OpenAI ``{"type": "input_audio",
    "input_audio": {"data": ...}}`` part, or None when the part holds no audio."""
    if part.get("type") == "input_audio" or "input_audio" in part:
        value = part.get("input_audio")
        url = value.get("data") if isinstance(value, dict) else value
    elif "audio" in part and part.get("type", "audio") == "audio":
        url = part.get("audio")
    else:
        return None
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{here} must give the audio as a non-empty string (a URL, a "
                             "data URL or an oss:// key)", param=here)
    return AudioPart(url, here)


def content_segments(content: Any, where: str) -> list[Segment]:
    """Text and images of a message's content, in order: a string, or a list of parts.

    Native parts look like ``{"text": ...}`` and ``{"image": ...}``, OpenAI parts like
    ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": ...}}``;
    video parts are ``{"video": url | [frame urls]}``, ``{"type": "video_url", ...}`` and
    ``{"type": "video", "video": [...]}``; audio parts ``{"audio": url}`` and
    ``{"type": "input_audio", ...}``.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    segments: list[Segment] = []
    for i, part in enumerate(content):
        here = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{here} must be an object", param=where)
        image = image_part(part, here)
        if image is not None:
            segments.append(image)
            continue
        video = video_part(part, here)
        if video is not None:
            segments.append(video)
            continue
        clip = audio_part(part, here)
        if clip is not None:
            segments.append(clip)
            continue
        kind = str(part.get("type", ""))
        if kind in MEDIA_TYPES:
            raise media_refusal(MEDIA_TYPES[kind], here)
        for key in MEDIA_KEYS:
            if key in part:
                raise media_refusal(key, here)
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{here} has no text", param=where)
        segments.append(text)
    return segments


def to_message(role: str, content: Any, where: str, *, partial: bool | None,
               fields: dict[str, Any]) -> Message:
    """A serving ``Message`` from one wire message (already shape-checked)."""
    if content is None and role in ("user", "system"):
        raise InvalidRequest(f"{where}.content is required for role {role!r}", param=where)
    segments = content_segments(content, f"{where}.content")
    images = [s for s in segments if isinstance(s, (ImagePart, VideoPart, AudioPart))]
    if images and role != "user":
        raise InvalidRequest(f"images, videos and audio may only be sent in user messages, "
                             f"not in {role!r} ones", param=images[0].where)
    text = "".join(s for s in segments if isinstance(s, str))
    extra = tuple((k, fields[k]) for k in MESSAGE_EXTRAS if fields.get(k) is not None)
    return Message(role=role, content=text, partial=bool(partial), extra=extra,
                   cache_until=cache_mark_end(content, f"{where}.content"),
                   parts=tuple(segments) if images else ())


def stop_items(stop: str | Sequence[Any] | None) -> tuple[StopItem, ...] | None:
    """The stop list as strings and token-id tuples; ``None`` when not given."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return (stop,)
    items: list[StopItem] = []
    for item in stop:
        if isinstance(item, str):
            items.append(item)
        elif isinstance(item, int):
            items.append((item,))
        else:
            items.append(tuple(item))
    return tuple(items)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def logprobs_content(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """``logprobs.content`` entries, the same shape in both APIs."""
    return [
        {"token": e.token, "bytes": list(e.bytes), "logprob": _finite(e.logprob),
         "top_logprobs": [{"token": t.token, "bytes": list(t.bytes),
                           "logprob": _finite(t.logprob)} for t in e.top_logprobs]}
        for e in entries
    ]


def tool_call_chunks(fragments: Sequence[Any]) -> list[dict[str, Any]]:
    """Stream form of tool-call fragments: ``index`` always; ``id``, ``type`` and the name
    only on a call's first fragment; later fragments carry argument text only."""
    out: list[dict[str, Any]] = []
    for f in fragments:
        if f.id is not None or f.name is not None:
            out.append({"index": f.index, "id": f.id or "", "type": "function",
                        "function": {"name": f.name or "", "arguments": f.arguments}})
        else:
            out.append({"index": f.index, "function": {"arguments": f.arguments}})
    return out


def merged_tool_calls(fragments: Sequence[Any]) -> list[dict[str, Any]]:
    """Whole tool calls from all fragments so far, in index order."""
    calls: dict[int, dict[str, Any]] = {}
    for f in fragments:
        call = calls.setdefault(f.index, {"index": f.index, "id": "", "type": "function",
                                          "function": {"name": "", "arguments": ""}})
        if f.id:
            call["id"] = f.id
        if f.name:
            call["function"]["name"] += f.name
        call["function"]["arguments"] += f.arguments
    return [calls[i] for i in sorted(calls)]
