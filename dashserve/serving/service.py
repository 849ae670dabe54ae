"""GenerationService: resolve the model, validate, build the prompt, admit, start the run.

This is the only place the platform (the gate) meets the engine. Everything that can
be refused is refused before admission, so a 4xx never costs a reservation; once
admitted, the ``GenerationRun`` guarantees exactly one ``Gate.finish``.

Images are fetched and preprocessed (off the event loop) only once the request passed every
check that needs none. Screening (``X-DashScope-DataInspection``) of the input happens before
admission, so a blocked input bills nothing. Web search happens after admission (searches are billed):
a failure there is billed as a failed request with whatever the search spent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

import torch

from dashserve.contracts.audio_tokens import audio_token_count
from dashserve.contracts.engine_client import AudioInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import (
    DashServeError,
    InvalidRequest,
    PromptTooLong,
    ServerBusy,
    UnsupportedFeature,
)
from dashserve.platform.gate import Admission, Gate, Principal, UsageRecord
from dashserve.platform.limits import check_engine_capacity
from dashserve.search.options import SearchOptions, parse_search_options
from dashserve.serving.asr import (
    ASR_GRAMMAR,
    AsrPlan,
    PreparedClip,
    asr_prompt,
    check_audio,
    context_text,
    is_chat_audio,
    parse_asr_options,
    place_audio,
    prepare_audio,
)
from dashserve.serving.documents import DocumentSource, expand_documents, has_documents
from dashserve.serving.features import ChatFeatures, resolve_features
from dashserve.serving.normalize import (
    check_input_length,
    check_ranges,
    sampling_params,
    split_stop,
)
from dashserve.serving.ocr import with_task_prompt
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.prompt import build_prompt, explicit_cache_tokens
from dashserve.serving.registry import ModelRegistry, ServedModel
from dashserve.serving.request import GenerationRequest
from dashserve.serving.run import CLIENT_CLOSED, SHUTDOWN, GenerationRun, Plan, client_error
from dashserve.serving.screening import Inspector, OutputScreen, checked_request, screen_input
from dashserve.serving.vision import (
    ImagePreparer,
    PreparedImages,
    expanded_position,
    place_images,
)
from dashserve.serving.web_search import SearchOutcome, WebSearch, with_system

log = logging.getLogger(__name__)
T = TypeVar("T")

# DashScope's explicit cache: a marked prefix shorter than this is not cached; a cached one
# lives this long after its last use.
EXPLICIT_CACHE_MIN_TOKENS = 1024
EXPLICIT_CACHE_TTL_S = 300.0
# Bounds checked before any prompt is rendered (a prompt of more cannot be useful).
MAX_MESSAGES = 2048
MAX_TOOLS = 128
PROMPT_THREADS = 4  # prompts are rendered and tokenized on these, unless they are short:
# a text-only request of at most this many characters is planned on the event loop, where it
# takes a fraction of a millisecond, less than the hop to a prompt thread and back costs
INLINE_PLAN_CHARS = 4096
# Loop turns a new run's pump gets before the response is built, so that the request is
# with its engine first: the local engine queues it in the first; an upstream needs the
# second, since aiohttp writes a request's body in a task of its own (eager only on Python
# 3.12 and later). Building and sending the response headers first cost the upstream
# request 0.6 to 0.9 ms on its way out, all of it added to the time to first token.
HANDOFF_TURNS = 2


async def handed_over() -> None:
    """Let a run just started hand its request to the engine (see ``HANDOFF_TURNS``)."""
    for _ in range(HANDOFF_TURNS):
        await asyncio.sleep(0)


def check_least_length(request: GenerationRequest, profile: ModelProfile,
                       max_token_bytes: int | None) -> None:
    """Refuse, without tokenizing it, a prompt whose text alone must exceed the input limit
    (a token stands for at most ``max_token_bytes`` bytes, and a character for at least one)."""
    if not max_token_bytes:
        return
    chars = sum(len(m.content) for m in request.messages)
    least = chars // max_token_bytes
    limit = request.params.max_input_tokens or profile.max_input_tokens
    limit = min(limit, profile.context_length - 1)
    if least > limit:
        raise PromptTooLong(f"Range of input length should be [1, {limit}]; the input has "
                                 f"at least {least} tokens", param="input")


def check_counts(request: GenerationRequest) -> None:
    """Refuse requests with more messages or tools than any prompt can use."""
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidRequest(f"too many messages: {len(request.messages)} (at most "
                             f"{MAX_MESSAGES})", param="messages")
    if len(request.tools) > MAX_TOOLS:
        raise InvalidRequest(f"too many tools: {len(request.tools)} (at most {MAX_TOOLS})",
                             param="tools")


class GenerationService:
    """Turns ``GenerationRequest``s into running ``GenerationRun``s.

    ``max_inflight_per_engine`` bounds the requests one engine holds (running or
    queued); past it new requests get 429 ``Throttling`` with a retry hint.
    ``documents`` resolves ``fileid://`` system messages (None: they are refused).
    """

    def __init__(self, registry: ModelRegistry, gate: Gate, *,
                 max_inflight_per_engine: int = 256, share_prefix_cache: bool = False,
                 images: ImagePreparer | None = None, web_search: WebSearch | None = None,
                 inspector: Inspector | None = None,
                 documents: DocumentSource | None = None,
                 max_waiting: int | None = None, max_kv_usage: float = 1.0) -> None:
        self.registry = registry
        self.gate = gate
        self.images = images or ImagePreparer()
        self.web_search = web_search
        self.inspector = inspector
        self.documents = documents
        self.max_inflight_per_engine = max_inflight_per_engine
        self.share_prefix_cache = share_prefix_cache
        self.max_waiting = max_waiting
        self.max_kv_usage = max_kv_usage
        self._inflight: defaultdict[int, int] = defaultdict(int)
        self._runs: set[GenerationRun] = set()
        self._prompt_pool = ThreadPoolExecutor(PROMPT_THREADS,
                                               thread_name_prefix="dashserve-prompt")

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy request work (templates, tokenization) on the prompt threads."""
        return await asyncio.get_running_loop().run_in_executor(self._prompt_pool, work, *args)

    async def _plan_first(self, request: GenerationRequest) -> Plan:
        """``_first_plan``, on the event loop for a short text-only request, else off it."""
        if is_short(request):
            return self._first_plan(request)
        return await self.off_loop(self._first_plan, request)

    def search_options(self, request: GenerationRequest) -> SearchOptions | None:
        """The request's web-search options (None: no search); refused without a provider."""
        options = parse_search_options(request.enable_search, request.search_options,
                                       request.model)
        if options is not None and self.web_search is None:
            raise UnsupportedFeature("web search (enable_search) is not available on this "
                                     "server: no search provider is configured",
                                     param="enable_search")
        return options

    def plan(self, request: GenerationRequest, images: PreparedImages | None = None,
             search: SearchOutcome | None = None) -> Plan:
        """Validate ``request`` against its model and build the engine's input (``images``:
        the request's images, already prepared; the search results in the system prompt
        when ``search`` found any)."""
        check_counts(request)
        served = self.registry.get(request.model)
        params = request.params
        profile = served.profile
        check_ranges(params, profile)
        features = resolve_features(request, profile)
        tokenizer = served.engine.tokenizer
        check_least_length(request, profile, getattr(tokenizer, "max_token_bytes", None))
        vision = served.engine.model_info.vision
        audio = getattr(served.engine.model_info, "audio", None)
        check_audio(request, audio)
        images = images or PreparedImages()
        if is_chat_audio(audio):
            assert audio is not None
            return self._audio_chat_plan(request, served, features, images.clips, audio)
        if audio is not None:
            return self._asr_plan(request, served, features, images.clips, audio)
        if (request.images or request.videos) and not images.any:  # not prepared yet:
            self.images.check(request, profile, vision)  # refuse what can be
        messages = request.messages
        if features.ocr is not None:
            messages = with_task_prompt(messages, features.ocr)
        if search is not None and search.prompt:
            messages = with_system(messages, search.prompt)
        template_ids = build_prompt(tokenizer, messages, enable_thinking=features.thinking,
                                    tools=features.template_tools or None)
        encode = tokenizer.encode_prompt
        prompt_ids, mm_inputs = place_images(template_ids, images.images, vision,
                                             images.videos, encode)
        check_input_length(params, profile, len(prompt_ids))
        stop = split_stop(params.stop, served.engine.model_info.vocab_size, tokenizer.decode)
        sampling = sampling_params(params, profile, len(prompt_ids), stop, features)
        explicit = any(m.cache_until is not None for m in request.messages)
        if explicit:
            pinned = expanded_position(explicit_cache_tokens(
                tokenizer, messages, template_ids, enable_thinking=features.thinking,
                tools=features.template_tools or None), template_ids, images.images, vision,
                images.videos, encode)
            if pinned >= EXPLICIT_CACHE_MIN_TOKENS:
                sampling = dataclasses.replace(
                    sampling, pin_prefix_tokens=pinned, pin_ttl_s=EXPLICIT_CACHE_TTL_S)
        hw = tuple(i.resized_hw for i in images.images) \
            if params.vl_enable_image_hw_output and images.images else None
        return Plan(served, tuple(prompt_ids), sampling, parse_tools=features.parse_tools,
                    parallel_tool_calls=request.parallel_tool_calls, explicit_cache=explicit,
                    mm_inputs=tuple(mm_inputs), image_tokens=images.image_tokens, image_hw=hw,
                    video_tokens=images.video_tokens,
                    search=search)

    def _audio_chat_plan(self, request: GenerationRequest, served: ServedModel,
                         features: ChatFeatures, clips: tuple[PreparedClip, ...],
                         audio: AudioInfo) -> Plan:
        """An audio-understanding request's plan (Qwen2-Audio): the chat template's prompt
        with each clip's placeholder widened to its encoder rows (before the clips are
        read, without them)."""
        params, profile = request.params, served.profile
        tokenizer = served.engine.tokenizer
        if request.tools:
            raise InvalidRequest("audio models take no tools", param="tools")
        template_ids = build_prompt(tokenizer, request.messages,
                                    enable_thinking=features.thinking)
        prompt_ids, mm_inputs, tokens = place_audio(template_ids, clips, audio)
        check_input_length(params, profile, len(prompt_ids))
        stop = split_stop(params.stop, served.engine.model_info.vocab_size, tokenizer.decode)
        sampling = sampling_params(params, profile, len(prompt_ids), stop, features)
        return Plan(served, tuple(prompt_ids), sampling, mm_inputs=mm_inputs,
                    asr=AsrPlan(tokens, 0, 0, None))

    def _asr_plan(self, request: GenerationRequest, served: ServedModel,
                  features: ChatFeatures, clips: tuple[PreparedClip, ...],
                  audio: AudioInfo) -> Plan:
        """A speech recognition request's plan: Qwen3-ASR's prompt around its clip (before
        the clip is read, the prompt without it)."""
        params, profile = request.params, served.profile
        tokenizer = served.engine.tokenizer
        options = parse_asr_options(request.asr_options)
        if request.api != "dashscope":  # the answer's language prefix and annotation
            raise UnsupportedFeature(   # have no place in a chat completion
                "speech recognition is available on the native API (MultiModalConversation), "
                "not in compatible mode", param="model")
        if request.tools:
            raise InvalidRequest("speech recognition models take no tools", param="tools")
        context = context_text(request)
        if clips:
            clip = clips[0]
            tokens = audio_token_count(clip.frames, audio.chunk_frames, audio.family)
            prompt_ids, item, context_tokens = asr_prompt(
                tokenizer.encode, tokenizer.encode_plain, context, clip, tokens, audio,
                options.language)
            mm_inputs: tuple[MultiModalInput, ...] = (item,)
            seconds = clip.seconds
        else:
            empty = PreparedClip(torch.zeros(audio.num_mel_bins, 0), 0, "", 0)
            prompt_ids, _, context_tokens = asr_prompt(
                tokenizer.encode, tokenizer.encode_plain, context, empty, 0, audio,
                options.language)
            mm_inputs, tokens, seconds = (), 0, 0
        check_input_length(params, profile, len(prompt_ids))
        stop = split_stop(params.stop, served.engine.model_info.vocab_size, tokenizer.decode)
        sampling = sampling_params(params, profile, len(prompt_ids), stop, features)
        if options.language is None and sampling.structured is None:
            sampling = dataclasses.replace(
                sampling, structured=StructuredOutputSpec(grammar=ASR_GRAMMAR))
        return Plan(served, tuple(prompt_ids), sampling, mm_inputs=mm_inputs,
                    asr=AsrPlan(tokens, seconds, context_tokens, options.language))

    def _salted(self, plan: Plan, principal: Principal) -> Plan:
        """``plan`` in the caller's prefix-cache partition (its workspace, unless shared)."""
        if self.share_prefix_cache:
            return plan
        salt = f"ws:{principal.workspace or ''}"
        return dataclasses.replace(plan, sampling=dataclasses.replace(plan.sampling,
                                                                      cache_salt=salt))

    async def _prepared_images(self, request: GenerationRequest,
                               principal: Principal) -> PreparedImages:
        """The request's images, fetched and preprocessed (none: nothing to do)."""
        if not request.images and not request.videos and not request.audios:
            return PreparedImages()
        served = self.registry.get(request.model)
        prepared = PreparedImages()
        if request.images or request.videos:
            prepared = await self.images.prepare(request, served.profile,
                                                 served.engine.model_info.vision,
                                                 principal.workspace)
        if request.audios:
            clips = await prepare_audio(request, getattr(served.engine.model_info, "audio", None),
                                        principal.workspace, self.images.config,
                                        self.images.executor)
            prepared = dataclasses.replace(prepared, clips=clips)
        return prepared

    async def _with_documents(self, request: GenerationRequest,
                              principal: Principal) -> GenerationRequest:
        """``request`` with the caller's ``fileid://`` documents put into its messages."""
        if self.documents is None or not has_documents(request.messages):
            return request
        self.registry.get(request.model)  # an unknown model is a 404 before any lookup
        messages = await expand_documents(request.messages, self.documents,
                                          principal.workspace)
        return dataclasses.replace(request, messages=messages, documents_expanded=True)

    def _first_plan(self, request: GenerationRequest) -> Plan:
        """``plan`` before images are read: refuses what can be refused without them."""
        try:
            return self.plan(request)
        except PromptTooLong as exc:
            if not request.documents_expanded:
                raise
            raise PromptTooLong(
                f"The documents referenced by fileid:// are too long for model "
                f"{request.model!r}: {exc.message}", param=exc.param) from None

    async def prepare(self, request: GenerationRequest, principal: Principal) -> Plan:
        """Plan ``request`` with its documents and images for ``principal``: what the
        tokenizer endpoint counts (web search aside, which only runs for generation)."""
        request = await self._with_documents(request, principal)
        plan = await self._plan_first(request)
        images = await self._prepared_images(request, principal)
        if images.any:
            plan = await self.off_loop(self.plan, request, images)
        return self._salted(plan, principal)

    async def start(self, request: GenerationRequest, principal: Principal, *,
                    on_admitted: Callable[[], None] | None = None) -> GenerationRun:
        """Plan, screen, admit, search and start ``request``. The caller must ``aclose()``
        the run. ``on_admitted`` is called once the request is admitted (from then on its
        run bills it, errors included)."""
        options = self.search_options(request)
        inspection = checked_request(request.inspection, self.inspector, request.model)
        screened = request.messages
        request = await self._with_documents(request, principal)
        plan = await self._plan_first(request)
        if inspection.input and self.inspector is not None:
            await screen_input(self.inspector, screened, principal.workspace)
        images = await self._prepared_images(request, principal)
        if images.any:
            plan = await self.off_loop(self.plan, request, images)
        plan = self._salted(plan, principal)
        key = id(plan.served.engine)
        if self._inflight[key] >= self.max_inflight_per_engine:
            raise ServerBusy(
                f"Requests throttling triggered: {self._inflight[key]} requests are already "
                f"running or queued on model {request.model!r}.", retry_after_s=1.0)
        # this model's engine only: a busy model never turns away requests for an idle one
        check_engine_capacity(plan.served.engine.stats(), max_waiting=self.max_waiting,
                              max_kv_usage=self.max_kv_usage)
        estimate = len(plan.prompt_token_ids) + (plan.sampling.max_tokens or 0) * plan.sampling.n
        searching = options is not None and self.web_search is not None
        # a key with ample room starts its run while the shared limiter admits it
        early = not searching and self.gate.expects_admission(principal, estimate)
        admission: Admission | None = None
        if not early:
            admission = await self.gate.admit(principal, request.request_id, request.model,
                                              estimate)
            if on_admitted is not None:
                on_admitted()
        if searching:
            assert admission is not None and options is not None
            plan = await self._with_search(request, plan, options, admission, images)
        if inspection.output and self.inspector is not None:
            plan = dataclasses.replace(
                plan, output_screen=OutputScreen(self.inspector, principal.workspace))
        self._inflight[key] += 1
        run: GenerationRun

        def release() -> None:
            self._inflight[key] -= 1
            self._runs.discard(run)

        run = GenerationRun(request.request_id, plan, admission, self.gate, release)
        self._runs.add(run)
        run.start()
        if early:
            await self._admit_started(run, request, principal, estimate, on_admitted)
        if plan.sampling.structured is not None:  # a grammar the engine refuses is a 400
            try:
                await run.accepted()
            except DashServeError as exc:
                await run.aclose(status_code=exc.status_code)
                raise
        else:  # the run hands its request over now, before the response is built
            await handed_over()
        return run

    async def _admit_started(self, run: GenerationRun, request: GenerationRequest,
                             principal: Principal, estimate: int,
                             on_admitted: Callable[[], None] | None) -> None:
        """Admit a run already started: its request leaves for the engine first, then the
        admission is asked; refused (or cancelled), the run is aborted and bills nothing."""
        await handed_over()
        try:
            await run.admitted(await self.gate.admit(principal, request.request_id,
                                                     request.model, estimate))
        except BaseException:
            await run.aclose()
            raise
        if on_admitted is not None:
            on_admitted()

    def _fitted(self, request: GenerationRequest, images: PreparedImages,
                outcome: SearchOutcome, principal: Principal) -> Plan:
        """The plan with as many results (in order) as the input limit allows."""
        for n in range(len(outcome.results), 0, -1):
            try:
                return self._salted(self.plan(request, images, outcome.keep(n)), principal)
            except PromptTooLong:
                continue
        return self._salted(self.plan(request, images, outcome.keep(0)), principal)

    async def _with_search(self, request: GenerationRequest, plan: Plan, options: SearchOptions,
                           admission: Admission, images: PreparedImages) -> Plan:
        """``plan`` with the search results in its prompt; bills a failure here."""
        assert self.web_search is not None
        started = time.monotonic()
        outcome: SearchOutcome | None = None
        try:
            outcome = await self.web_search.run(plan.served, request.request_id,
                                                request.messages, options)
            return await self.off_loop(self._fitted, request, images, outcome,
                                       admission.principal)
        except BaseException as exc:
            error = client_error(exc) if isinstance(exc, Exception) else None
            status = error.status_code if error is not None else CLIENT_CLOSED
            principal = admission.principal
            await self.gate.finish(admission, UsageRecord(
                request_id=request.request_id, key_id=principal.key_id,
                key_prefix=principal.key_prefix, workspace=principal.workspace,
                model=admission.model,
                input_tokens=outcome.overhead_tokens if outcome is not None else 0,
                output_tokens=0, cached_tokens=0, reasoning_tokens=0, finish_reason=None,
                status_code=status, ttft_ms=None,
                duration_ms=(time.monotonic() - started) * 1000.0,
                created_at=datetime.now(timezone.utc),
                search_count=outcome.count if outcome is not None else 0))
            if error is not None and error is not exc:
                raise error from exc
            raise

    @property
    def num_inflight(self) -> int:
        return len(self._runs)

    async def close_all(self) -> None:
        """Abort and bill every run still open (server shutdown)."""
        runs = list(self._runs)
        if runs:
            log.warning("aborting %d requests still running at shutdown", len(runs))
            await asyncio.gather(*(run.aclose(status_code=SHUTDOWN) for run in runs))
        self._prompt_pool.shutdown(wait=False, cancel_futures=True)


def is_short(request: GenerationRequest) -> bool:
    """A request whose prompt is quick to build: text only, no tools, few characters."""
    if request.tools or request.response_format is not None:
        return False
    size = 0
    for message in request.messages:
        if message.parts or message.extra:  # media, or tool calls and reasoning of any size
            return False
        size += len(message.content)
    return size <= INLINE_PLAN_CHARS
