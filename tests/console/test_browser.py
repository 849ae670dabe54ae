"""The console in headless Chromium against `dashserve serve` on the real tiny engine: sign in,
a streamed playground answer, "show code" that runs, a key created, used from the openai SDK
and revoked, usage that counts it (the numbers of `dashserve usage`), and the live page.

Screenshots of every page land in tests/console/artifacts/ (light and dark).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

ADMIN_KEY = "sk-console-admin"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = next((p for p in (os.environ.get("DASHSERVE_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium)"),
]


@dataclass
class Server:
    url: str
    data_dir: Path
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def server(qwen3_tiny_dir: Path, model_dir_factory: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("console-data")
    vision_dir = model_dir_factory("qwen3-vl-tiny")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashserve", "serve", "--model", str(qwen3_tiny_dir),
         "--served-model-name", "qwen-plus", "qwen3-0.6b", "--model", str(vision_dir),
         "--served-model-name", "qwen3-vl-plus", "--admin-key", ADMIN_KEY,
         "--data-dir", str(data_dir), "--port", str(port), "--max-model-len", "1024",
         "--log-level", "warning"],
        # The torch path: the console does not depend on the native kernels' first build.
        env={**os.environ, "DASHSERVE_NATIVE": "0"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.3)
        yield Server(url, data_dir, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
        assert ADMIN_KEY not in output  # the key never reaches the logs


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


PAGE_ERRORS: dict[int, list[str]] = {}


def new_page(browser: Any, server: Server, scheme: str = "light") -> Any:
    context = browser.new_context(viewport={"width": 1366, "height": 820}, color_scheme=scheme,
                                  base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    # Script errors and refused loads (the page's CSP included) fail the test in close().
    errors = PAGE_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return page


def close(page: Any) -> None:
    errors = PAGE_ERRORS.pop(id(page))
    page.context.close()
    # Failed API calls the test provokes (a wrong key, a refused parameter) log their status.
    unexpected = [e for e in errors if not re.search(r"status of (400|401)", e)]
    assert not unexpected, unexpected


def sign_in(page: Any, key: str) -> None:
    page.goto("/console/")
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    assert key not in page.url


def shot(page: Any, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def get_json(server: Server, path: str, key: str = ADMIN_KEY) -> Any:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def wait_for(read: Any, timeout_s: float = 10.0) -> Any:
    """The first truthy value of ``read()`` (usage is written in batches, off the request)."""
    deadline = time.monotonic() + timeout_s
    while not (value := read()):
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.2)
    return value


def send(page: Any, text: str) -> Any:
    """Send a playground message; the finished answer's element."""
    before = page.locator(".msg.assistant").count()
    page.fill("#pg-input", text)
    page.press("#pg-input", "Enter")
    page.wait_for_function("""n => {
        const answer = document.querySelectorAll('.msg.assistant')[n];
        return answer && !answer.classList.contains('streaming'); }""", arg=before)
    return page.locator(".msg.assistant").nth(before)


def test_sign_in_and_stream_in_the_playground(browser: Any, server: Server) -> None:
    page = new_page(browser, server)
    page.goto("/console/")
    page.fill("#signin-key", "sk-wrong")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:has-text('not valid')")
    sign_in(page, ADMIN_KEY)
    assert page.locator("#nav a:visible").all_inner_texts() == ["Playground", "Keys", "Usage",
                                                               "Live"]
    assert page.evaluate("sessionStorage.length") == 1
    page.wait_for_selector("#pg-model option[value=qwen-plus]", state="attached")
    page.select_option("#pg-model", "qwen-plus")
    assert page.locator(".attach").is_hidden()  # a text model takes no images
    page.fill("input[name=max_tokens]", "12")
    page.fill("input[name=seed]", "7")
    page.fill("textarea[name=system]", "You are a terse assistant.")
    streamed: list[int] = []
    page.expose_function("noteLength", lambda n: streamed.append(n))
    page.evaluate("""() => new MutationObserver(() => {
        const el = document.querySelector('.msg.assistant .content');
        if (el) window.noteLength(el.textContent.length);
      }).observe(document.querySelector('#pg-log'), {subtree: true, childList: true,
                                                     characterData: true})""")
    answer = send(page, "你好，请介绍一下你自己。")
    text = answer.locator(".content").inner_text()
    stats = answer.locator(".stats").inner_text()
    assert text.strip() and not answer.evaluate("e => e.classList.contains('failed')"), stats
    assert re.search(r"input \d+ · output 12 tokens", stats), stats
    assert re.search(r"TTFT \d+(\.\d+)? (ms|s)", stats) and "finish length" in stats
    assert len(set(streamed)) > 2  # the answer grew piece by piece
    records = wait_for(lambda: get_json(server, "/admin/v1/usage/records?limit=1")["data"])
    assert records[0]["output_tokens"] == 12 and records[0]["model"] == "qwen-plus"

    # Thinking: the reasoning is shown apart; after the budget the answer follows.
    page.check("input[name=enable_thinking]")
    page.fill("input[name=thinking_budget]", "4")
    page.fill("input[name=max_tokens]", "16")
    answer = send(page, "1+1=?")
    reasoning = answer.locator(".reasoning-text").text_content()
    assert reasoning.strip() and answer.locator(".reasoning").is_visible()
    assert reasoning not in answer.locator(".content").inner_text()
    spent = re.search(r"reasoning (\d+) tokens", answer.locator(".stats").inner_text())
    assert spent and 4 <= int(spent.group(1)) < 16  # the budget, then the reasoning is closed
    shot(page, "playground")
    page.emulate_media(color_scheme="dark")
    shot(page, "playground-dark")
    page.emulate_media(color_scheme="light")

    # A JSON schema constrains the answer; tools that are not JSON are caught before sending.
    page.uncheck("input[name=enable_thinking]")
    page.select_option("select[name=response_format]", "json_schema")
    page.fill("textarea[name=json_schema]", json.dumps({"name": "flag", "schema": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": False}}))
    page.fill("input[name=max_tokens]", "40")
    answer = send(page, "Answer in JSON.")
    assert "finish stop" in answer.locator(".stats").inner_text()
    assert set(json.loads(answer.locator(".content").inner_text())) == {"ok"}
    page.select_option("select[name=response_format]", "")
    page.fill("textarea[name=tools]", "[{not json")
    page.fill("#pg-input", "hi")
    page.press("#pg-input", "Enter")
    page.wait_for_selector("#pg-error:has-text('tools is not valid JSON')")
    page.fill("textarea[name=tools]", "")

    # A refused parameter comes back as the server's own error.
    page.fill("input[name=temperature]", "5")
    answer = send(page, "hi")
    assert "400 invalid_parameter_error" in answer.locator(".stats").inner_text()
    assert "temperature" in answer.locator(".stats").inner_text()
    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
    close(page)


def test_an_attached_image_reaches_the_vision_model(browser: Any, server: Server,
                                                     tmp_path: Path) -> None:
    import io

    from PIL import Image

    picture = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (220, 40, 40)).save(buffer, "PNG")
    picture.write_bytes(buffer.getvalue())
    page = new_page(browser, server)
    sign_in(page, ADMIN_KEY)
    page.wait_for_selector("#pg-model option[value='qwen3-vl-plus']", state="attached")
    page.select_option("#pg-model", "qwen3-vl-plus")
    assert page.locator(".attach").is_visible()
    page.set_input_files("#pg-image-file", str(picture))
    page.wait_for_selector("#pg-attached li:has-text('red.png')")
    page.fill("input[name=max_tokens]", "6")
    answer = send(page, "图中描绘的是什么景象？")
    stats = answer.locator(".stats").inner_text()
    assert not answer.evaluate("e => e.classList.contains('failed')"), stats
    assert re.search(r"image \d+", stats), stats  # the image was billed as image tokens
    assert page.locator("#pg-attached li").count() == 0  # sent with this message only
    shot(page, "playground-image")
    close(page)


def test_show_code_runs(browser: Any, server: Server, tmp_path: Path) -> None:
    """The three snippets of "show code" run as printed and get an answer from the server."""
    page = new_page(browser, server)
    sign_in(page, ADMIN_KEY)
    page.wait_for_selector("#pg-model option[value=qwen-plus]", state="attached")
    page.fill("input[name=max_tokens]", "5")
    page.fill("input[name=top_k]", "10")
    page.fill("#pg-input", "Say hi")
    page.click("#pg-code")
    env = {**os.environ, "DASHSCOPE_API_KEY": ADMIN_KEY, "NO_PROXY": "127.0.0.1"}
    for tab in ("curl", "openai SDK", "dashscope SDK"):
        page.click(f"#code-dialog .tabs button:has-text('{tab}')")
        code = page.locator("#code-text").inner_text()
        assert ADMIN_KEY not in code and server.url in code
        if tab == "curl":
            if shutil.which("curl") is None:
                continue
            out = subprocess.run(["bash", "-c", code], capture_output=True, text=True,
                                 timeout=60, env=env, check=True).stdout
            assert '"finish_reason":"length"' in out.replace(" ", "") and "[DONE]" in out
        else:
            script = tmp_path / f"snippet_{tab.split()[0]}.py"
            script.write_text(code, "utf-8")
            out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                 timeout=60, env=env, check=True).stdout
            assert "5" in out and ("completion_tokens=5" in out or '"output_tokens": 5' in out), out
        if tab == "openai SDK":
            assert 'extra_body={"top_k": 10}' in code
    shot(page, "show-code")
    close(page)


def test_key_created_used_revoked_and_counted(browser: Any, server: Server) -> None:
    from openai import AuthenticationError, OpenAI

    page = new_page(browser, server)
    sign_in(page, ADMIN_KEY)
    page.goto("/console/#/keys")
    page.fill("input[name=name]", "browser-test")
    page.fill("input[name=workspace]", "ws-browser")
    page.fill("input[name=models]", "qwen-plus, qwen3-0.6b")
    page.fill("input[name=rpm]", "100")
    page.fill("input[name=tpm]", "50000")
    page.click("#key-form button[type=submit]")
    secret = page.locator("#key-secret-value").inner_text().strip()
    assert secret.startswith("sk-")
    row = page.locator("#keys-table tbody tr", has_text="browser-test")
    prefix = row.get_attribute("data-prefix")
    assert secret.startswith(prefix)
    assert "ws-browser" in row.inner_text() and "qwen-plus, qwen3-0.6b" in row.inner_text()
    shot(page, "keys")

    client = OpenAI(api_key=secret, base_url=server.url + "/compatible-mode/v1", max_retries=0)
    completion = client.chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
        extra_headers={"X-DashScope-WorkSpace": "ws-browser"})
    assert completion.usage.completion_tokens == 6

    # The key itself signs in to the playground and its own usage only.
    own = new_page(browser, server)
    sign_in(own, secret)
    assert own.locator("#nav a:visible").all_inner_texts() == ["Playground", "Usage"]
    own.goto("/console/#/keys")  # not for this key: back to the playground
    own.wait_for_selector("#pg-form")
    own.goto("/console/#/usage")
    requests = own.locator("#usage-totals .tile[data-name=num_requests] .value")
    deadline = time.monotonic() + 10
    while requests.inner_text() != "1":
        assert time.monotonic() < deadline, requests.inner_text()
        own.click("#usage-refresh")
        time.sleep(0.3)
    assert own.locator("#usage-table tbody tr").all_inner_texts()[0].split("\t")[:2] == \
        ["qwen-plus", "1"]
    shot(own, "usage-own")

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button:has-text('Revoke')").click()
    row.wait_for(state="detached")
    with pytest.raises(AuthenticationError) as refused:
        client.chat.completions.create(model="qwen-plus", max_tokens=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 401
    page.check("#keys-revoked")
    page.locator("#keys-table tbody tr", has_text="browser-test").locator(
        ".badge:has-text('revoked')").wait_for()
    own.reload()  # the revoked key's console signs out
    own.wait_for_selector("#signin-error:has-text('no longer valid')")
    assert own.evaluate("sessionStorage.length") == 0

    # The admin's usage page counts the request, with the numbers of `dashserve usage`.
    page.goto("/console/#/usage")
    page.select_option("#usage-by", "key")
    key_row = page.locator("#usage-table tbody tr", has_text=prefix)
    key_row.wait_for()
    cells = {c.get_attribute("data-col"): c.inner_text()
             for c in key_row.locator("td[data-col]").all()}
    cli = subprocess.run(
        [sys.executable, "-m", "dashserve", "usage", "--by", "key", "--json",
         "--data-dir", str(server.data_dir)], capture_output=True, text=True, check=True)
    (expected,) = [r for r in json.loads(cli.stdout) if r["key_prefix"] == prefix]
    assert cells["num_requests"] == "1" and expected["num_requests"] == 1
    for name in ("input_tokens", "output_tokens", "cached_tokens", "total_tokens"):
        assert cells[name].replace(",", "") == str(expected[name]), name
    days = get_json(server, "/admin/v1/usage?by=day")["data"]
    today = days[-1]
    bars = page.locator("#usage-daily rect[data-series=requests]")
    assert bars.last.get_attribute("data-value") == str(today["num_requests"])
    assert page.locator("#usage-totals .tile[data-name=num_requests] .value").inner_text() == \
        f"{sum(d['num_requests'] for d in days):,}"
    with page.expect_download() as download:
        page.click("#usage-csv-group")
    csv_text = Path(download.value.path()).read_text("utf-8")
    assert csv_text.splitlines()[0].startswith("key_prefix,key_id,num_requests,num_errors")
    assert any(line.startswith(f"{prefix},") and ",1,0," in line for line in csv_text.splitlines())
    page.select_option("#usage-by", "model")
    page.locator("#usage-table tbody tr", has_text="qwen-plus").wait_for()
    shot(page, "usage", full_page=True)
    page.emulate_media(color_scheme="dark")
    shot(page, "usage-dark", full_page=True)
    close(page)
    close(own)


def test_live_page(browser: Any, server: Server) -> None:
    page = new_page(browser, server)
    sign_in(page, ADMIN_KEY)
    page.goto("/console/#/live")
    page.wait_for_selector("#live-status:has-text('Updated')")
    metrics = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    kv = float(re.search(r"^dashserve_kv_cache_usage_ratio (\S+)", metrics, re.M).group(1))
    tiles = {t.get_attribute("data-name"): t.locator(".value").inner_text()
             for t in page.locator("#live-tiles .tile").all()}
    assert tiles["running"] == "0" and tiles["waiting"] == "0"
    assert tiles["kv"] == f"{kv * 100:.1f} %"
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", tiles["ttft-p50"]), tiles
    served = sum(float(v) for v in re.findall(r"^dashserve_requests_total\{[^}]*\} (\S+)",
                                              metrics, re.M))
    assert int(tiles["requests"].replace(",", "")) == int(served)
    # Traffic shows up at the next refresh: output tokens/s above zero.
    body = json.dumps({"model": "qwen-plus", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "count"}]}).encode()
    request = urllib.request.Request(
        server.url + "/compatible-mode/v1/chat/completions", data=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=60).read()
    page.wait_for_function("""() => parseFloat(document.querySelector(
        '#live-tiles .tile[data-name=output-rate] .value').textContent) > 0""")
    assert page.locator("#live-charts svg.chart path.line").count() >= 3
    shot(page, "live")
    close(page)
