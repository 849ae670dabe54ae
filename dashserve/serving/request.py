"""The protocol-neutral request that both API adapters hand to the serving layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dashserve.inspection.header import InspectionRequest

# One stop entry as the client gave it: a string, or a token-id sequence.
StopItem = str | tuple[int, ...]
ApiKind = Literal["dashscope", "openai"]


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a message, as the client gave it: a URL, a data URL, an ``oss://`` key or
    a local path (``source``), with its own pixel bounds. ``where`` names the part in errors."""

    source: str
    where: str
    min_pixels: int | None = None
    max_pixels: int | None = None
    rotate: bool = False  # enable_rotate: turn the picture upright by its EXIF orientation


@dataclass(frozen=True, slots=True)
class VideoPart:
    """A video in a message: a file (``source`` a string) or its frames as images (a tuple),
    each given as images are; ``fps`` and the pixel bounds as the client gave them."""

    source: str | tuple[str, ...]
    where: str
    fps: float | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None


@dataclass(frozen=True, slots=True)
class AudioPart:
    """An audio clip in a message: a URL, a data URL or an ``oss://`` key (``source``)."""

    source: str
    where: str


Segment = str | ImagePart | VideoPart | AudioPart


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn, its text flattened by the API adapter.

    ``partial`` marks a trailing assistant turn the model must continue (DashScope partial
    mode). ``extra`` carries template-relevant keys we pass through untouched (``name``,
    ``tool_calls``, ``tool_call_id``, ``reasoning_content``). ``cache_until`` is where, in
    ``content``, the last part carrying an explicit cache marker (``cache_control``) ends.
    ``parts`` holds the text and images in their order when the turn has images (then
    ``content`` is its text alone); empty for text-only turns.
    """

    role: str
    content: str
    partial: bool = False
    extra: tuple[tuple[str, Any], ...] = ()
    cache_until: int | None = None
    parts: tuple[Segment, ...] = ()

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @property
    def videos(self) -> tuple[VideoPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, VideoPart))

    @property
    def audios(self) -> tuple[AudioPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, AudioPart))

    def to_template(self) -> dict[str, Any]:
        """The dict the chat template expects: VL templates take a list of image and text
        parts (each image becomes ``<|vision_start|><|image_pad|><|vision_end|>``)."""
        content: Any = self.content
        if self.parts:
            content = [{"type": "image"} if isinstance(p, ImagePart)
                       else {"type": "video"} if isinstance(p, VideoPart)
                       else {"type": "audio"} if isinstance(p, AudioPart)
                       else {"type": "text", "text": p} for p in self.parts]
        out: dict[str, Any] = {"role": self.role, "content": content}
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class RequestedParams:
    """What the client asked for. ``None`` means "not given": the model profile decides.

    Only shape is guaranteed here (types); ranges are checked by ``serving.normalize``.
    ``stop`` keeps strings and token-id sequences in the order given.
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    stop: tuple[StopItem, ...] | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    enable_thinking: bool | None = None
    thinking_budget: int | None = None
    vl_high_resolution_images: bool | None = None
    vl_enable_image_hw_output: bool | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A chat generation request after wire parsing, before defaults and validation.

    ``model`` is the served name the client used. ``stream`` says whether the client
    reads a stream; how a stream is rendered (deltas or snapshots) is the API's business.
    ``tools``/``tool_choice`` and ``response_format`` are passed as the client sent them
    (JSON-like values); ``serving.normalize`` decides what is supported.
    """

    request_id: str
    model: str
    messages: tuple[Message, ...]
    params: RequestedParams = field(default_factory=RequestedParams)
    stream: bool = False
    api: ApiKind = "dashscope"
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = None
    parallel_tool_calls: bool = False  # DashScope's default: at most one call per answer
    response_format: dict[str, Any] | None = None
    resolve_oss: bool = False  # X-DashScope-OssResourceResolve: enable (oss:// image keys)
    enable_search: bool = False
    search_options: Any = None  # as sent; checked by ``search.options``
    ocr_options: Any = None  # as sent; checked by ``serving.ocr``
    asr_options: Any = None  # as sent; checked by ``serving.asr``
    inspection: InspectionRequest = field(default_factory=InspectionRequest)
    documents_expanded: bool = False  # fileid:// documents already put into the messages

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(image for m in self.messages for image in m.images)

    @property
    def videos(self) -> tuple[VideoPart, ...]:
        return tuple(video for m in self.messages for video in m.videos)

    @property
    def audios(self) -> tuple[AudioPart, ...]:
        return tuple(clip for m in self.messages for clip in m.audios)
