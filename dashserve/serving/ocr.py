"""Built-in OCR tasks (``ocr_options``) of the ``qwen-vl-ocr`` models.

A task is a fixed prompt, an optional grammar and a parser. The service writes the task's
prompt in place of the caller's text (seed 001: the prompt of a built-in task cannot be
changed), the grammar engine keeps the answer inside the task's shape, and the parser turns
the answer into ``message.content[0]["ocr_result"]``.

One task is built in: ``key_information_extraction``. Its ``task_config.result_schema`` is a
JSON template (objects of keys, a list holding one element template, ``""`` for a value);
the answer is constrained to exactly that template's keys, each value a string (at most
``VALUE_MAX_CHARS`` characters) or null, so ``ocr_result`` is valid JSON with the
schema's keys whatever the weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import InvalidRequest, UnsupportedFeature
from dashserve.serving.request import Message

KIE = "key_information_extraction"
# The task's prompt as the service writes it (seed 001); {result_schema} gets the template.
KIE_PROMPT = (
    "假设你是一名信息提取专家。现在给你一个 JSON 模式,用图像中的信息填充该模式的值部分。请注意,"
    "如果值是一个列表,模式将为每个元素提供一个模板。当图像中有多个列表元素时,将使用此模板。最后,"
    "只需要输出合法的 JSON。所见即所得,并且输出语言需要与图像保持一致。模糊或者强光遮挡的单个文字"
    "可以用英文问号?代替。如果没有对应的值则用 null 填充。不需要解释。请注意,输入图像均来自公共基准"
    "数据集,不包含任何真实的个人隐私数据。请按要求输出结果。输入的 JSON 模式内容如下: "
    "{result_schema}。")
VALUE_MAX_CHARS = 256  # one extracted value (a name, a code, an amount, an address)
MAX_SCHEMA_DEPTH = 8
MAX_SCHEMA_KEYS = 256


@dataclass(frozen=True, slots=True)
class OcrTask:
    """One request's built-in task: its prompt, its grammar and its answer parser."""

    name: str
    prompt: str
    structured: StructuredOutputSpec | None
    parse: Callable[[str], Any]


def _value_schema(template: Any, where: str, depth: int, keys: list[int]) -> dict[str, Any]:
    """The JSON schema of one node of a ``result_schema`` template."""
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(f"{where} is nested more than {MAX_SCHEMA_DEPTH} levels deep",
                             param="ocr_options.task_config.result_schema")
    if isinstance(template, dict):
        keys[0] += len(template)
        if keys[0] > MAX_SCHEMA_KEYS:
            raise InvalidRequest(f"ocr_options.task_config.result_schema has more than "
                                 f"{MAX_SCHEMA_KEYS} keys",
                                 param="ocr_options.task_config.result_schema")
        return {"type": "object",
                "properties": {k: _value_schema(v, f"{where}.{k}", depth + 1, keys)
                               for k, v in template.items()},
                "required": list(template), "additionalProperties": False}
    if isinstance(template, list):
        if len(template) > 1:
            raise InvalidRequest(f"{where}: a list in result_schema holds one element template",
                                 param="ocr_options.task_config.result_schema")
        item = _value_schema(template[0], f"{where}[0]", depth + 1, keys) if template \
            else {"type": "string", "maxLength": VALUE_MAX_CHARS}
        return {"anyOf": [{"type": "array", "items": item}, {"type": "null"}]}
    return {"anyOf": [{"type": "string", "maxLength": VALUE_MAX_CHARS}, {"type": "null"}]}


def result_json_schema(template: Any) -> dict[str, Any]:
    """The JSON schema the answer to a ``result_schema`` template must follow."""
    if not isinstance(template, dict) or not template:
        raise InvalidRequest("ocr_options.task_config.result_schema must be a non-empty object",
                             param="ocr_options.task_config.result_schema")
    return _value_schema(template, "result_schema", 0, [0])


def _json_result(text: str) -> Any:
    """The answer as JSON (None when it is not: cut short by max_tokens)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _kie(config: Mapping[str, Any]) -> OcrTask:
    template = config.get("result_schema")
    schema = result_json_schema(template)
    prompt = KIE_PROMPT.replace("{result_schema}", json.dumps(template, ensure_ascii=False))
    return OcrTask(KIE, prompt, StructuredOutputSpec(json_schema=schema), _json_result)


_TASKS: dict[str, Callable[[Mapping[str, Any]], OcrTask]] = {KIE: _kie}
# Tasks the public service documents and dashserve does not have.
NOT_HERE = frozenset({"text_recognition", "document_parsing", "table_parsing",
                      "formula_recognition", "multi_lan", "advanced_recognition"})


def is_ocr_model(model: str) -> bool:
    return model.lower().startswith("qwen-vl-ocr")


def parse_ocr_options(options: Any, model: str) -> OcrTask | None:
    """The built-in task ``options`` asks for (None: no task); 400 on anything else."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise InvalidRequest("ocr_options must be an object", param="ocr_options")
    if not is_ocr_model(model):
        raise UnsupportedFeature(f"OCR tasks (ocr_options) are not available on the model "
                                 f"{model!r}; use a qwen-vl-ocr model", param="ocr_options")
    task = options.get("task")
    if task in NOT_HERE:
        raise InvalidRequest(f"ocr_options.task {task!r} is not available on this server; "
                             f"the built-in tasks here are {sorted(_TASKS)}",
                             param="ocr_options.task")
    if task not in _TASKS:
        raise InvalidRequest(f"ocr_options.task must be one of {sorted(_TASKS)}; got "
                             f"{task!r}", param="ocr_options.task")
    config = options.get("task_config", {})
    if not isinstance(config, dict):
        raise InvalidRequest("ocr_options.task_config must be an object",
                             param="ocr_options.task_config")
    return _TASKS[task](config)


def with_task_prompt(messages: tuple[Message, ...], task: OcrTask) -> tuple[Message, ...]:
    """``messages`` with the last user turn's text replaced by the task's prompt (its
    images kept, the prompt after them)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise InvalidRequest("ocr_options needs a user message with an image",
                             param="messages")
    turn = messages[last]
    if not turn.images:
        raise InvalidRequest("ocr_options needs an image in the last user message",
                             param="messages")
    media = tuple(p for p in turn.parts if not isinstance(p, str))  # images (and videos)
    turn = replace(turn, content=task.prompt, parts=(*media, task.prompt), cache_until=None)
    return (*messages[:last], turn, *messages[last + 1:])
