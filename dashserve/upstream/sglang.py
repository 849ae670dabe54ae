"""SGLang's native ``/generate`` with ``input_ids``: token ids in, token ids and usage out.

Follows the stream of SGLang 0.4/0.5: each ``data:`` object has ``text``, ``output_ids``
and ``meta_info`` (``prompt_tokens``, ``completion_tokens``, ``cached_tokens``,
``finish_reason`` as ``{"type": "stop"|"length"|"abort", ...}``). Output is cumulative by
default and incremental with ``--incremental-streaming-output`` (``--stream-output`` in
older releases, where only ``output_ids`` became incremental); both are read from the ids.
An abort the scheduler finishes (``/abort_request`` on a running request, recorded from
SGLang 0.5.23) ends like any other object: its new ids, text and full ``meta_info``. The
tokenizer manager's own abort echo (``_handle_abort_req``: e.g. a request aborted while
waiting) has no ``prompt_tokens``; incremental, it repeats only the last token, already
sent, with the whole text: nothing in it is new output.
``sampling_seed`` is sent, but SGLang 0.5.23 follows it only under
``--enable-deterministic-inference`` (not offered with the torch_native attention backend):
each server's ``/server_info`` is read once; one started without it is named in a warning,
and a seed the client set goes only to servers that follow it (none: a 400).
"""

from __future__ import annotations

import json
from typing import Any

from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.upstream.dialect import Chunk, Dialect, RequestPlan, finish_reason


class SglangGenerate(Dialect):
    kind = "sglang"
    path = "/generate"
    health_path = "/health"
    metrics_path = "/metrics"  # served with --enable-metrics
    load_metrics = ("sglang:num_running_reqs", "sglang:num_queue_reqs")
    info_paths = ("/server_info", "/get_server_info")  # 0.5.x; older releases only the second

    def ignores_seeds(self, info: dict[str, Any]) -> bool:
        return not info.get("enable_deterministic_inference")

    def info_warnings(self, info: dict[str, Any]) -> list[str]:
        if not self.ignores_seeds(info):
            return []
        return ["it was started without --enable-deterministic-inference, so it does not "
                "follow seeds: requests that set one go to other servers of the pool (none: "
                "400), and the default seed does not make its answers repeatable"]

    def request_body(self, plan: RequestPlan, params: SamplingParams) -> dict[str, Any]:
        self.check_common(params)
        sampling: dict[str, Any] = {
            "max_new_tokens": plan.max_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "top_k": params.effective_top_k or -1, "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "skip_special_tokens": False, "no_stop_trim": True,
        }
        if params.min_tokens:
            sampling["min_new_tokens"] = params.min_tokens
        if params.ignore_eos:
            sampling["ignore_eos"] = True
        if params.stop_token_ids:
            sampling["stop_token_ids"] = list(params.stop_token_ids)
        if params.seed is not None:
            sampling["sampling_seed"] = params.seed
        spec = params.structured
        if spec is not None and spec.json_schema is not None:
            sampling["json_schema"] = json.dumps(spec.json_schema)
        elif spec is not None and spec.json_object:
            sampling["json_schema"] = json.dumps({"type": "object"})
        return {"input_ids": plan.prompt_token_ids, "sampling_params": sampling, "stream": True}

    def parse(self, data: dict[str, Any]) -> Chunk | None:
        meta = data.get("meta_info")
        if not isinstance(meta, dict):
            return None
        ids = data.get("output_ids")
        completion = meta.get("completion_tokens")
        ids = list(ids) if isinstance(ids, list) else None
        # cumulative when it holds every output token so far (the default)
        cumulative = ids is not None and completion is not None and len(ids) == completion
        reason = finish_reason(meta.get("finish_reason"))
        text = data.get("text") or ""
        if reason is FinishReason.ABORT and not cumulative and "prompt_tokens" not in meta:
            ids, text = [], ""  # the echo: the last token again (already sent), the whole text
        return Chunk(text=text, token_ids=ids, finish_reason=reason,
                     num_prompt_tokens=meta.get("prompt_tokens"), num_output_tokens=completion,
                     num_cached_tokens=meta.get("cached_tokens"), is_last=reason is not None,
                     is_cumulative=cumulative)
