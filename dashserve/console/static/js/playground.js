// Playground: a streamed chat through /compatible-mode/v1/chat/completions, with the
// reasoning shown apart from the answer, token usage and time to first token per answer.

import { api, authHeaders, errorFrom, sseData } from "./api.js";
import { GENERATORS } from "./codegen.js";
import { field, fmt, fmtMs, h } from "./dom.js";

const NUMBERS = [
  // name, label, step, hint
  ["temperature", "temperature", "0.05", "[0, 2)"],
  ["top_p", "top_p", "0.05", "(0, 1]"],
  ["top_k", "top_k", "1", "0 or > 100: off"],
  ["max_tokens", "max_tokens", "1", ">= 1"],
  ["seed", "seed", "1", "default 1234"],
];

class InputError extends Error {}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(`${what} is not valid JSON: ${err.message}`);
  }
}

export async function render(root) {
  const models = h("select", { name: "model", id: "pg-model" });
  const system = h("textarea", { name: "system", rows: "3", placeholder: "You are a helpful assistant." });
  const numbers = Object.fromEntries(NUMBERS.map(([name, , step]) => [name,
    h("input", { type: "number", name, step, placeholder: "default", inputmode: "decimal" })]));
  const thinking = h("input", { type: "checkbox", name: "enable_thinking" });
  const budget = h("input", { type: "number", name: "thinking_budget", min: "1", step: "1",
    placeholder: "none", disabled: true });
  thinking.addEventListener("change", () => { budget.disabled = !thinking.checked; });
  const format = h("select", { name: "response_format" },
    h("option", { value: "" }, "text (default)"), h("option", { value: "json_object" }, "json_object"),
    h("option", { value: "json_schema" }, "json_schema"));
  const schema = h("textarea", { name: "json_schema", rows: "5", hidden: true, spellcheck: "false",
    placeholder: '{"name": "answer", "schema": {"type": "object", "properties": {}}}' });
  format.addEventListener("change", () => { schema.hidden = format.value !== "json_schema"; });
  const tools = h("textarea", { name: "tools", rows: "4", spellcheck: "false",
    placeholder: '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]' });
  // Images, shown for models that take them: files (sent as data URLs) or URLs.
  const imageFile = h("input", { type: "file", id: "pg-image-file", accept: "image/*", multiple: true });
  const imageUrl = h("input", { type: "url", id: "pg-image-url", placeholder: "or an image URL (http, https, data:)" });
  const attached = h("ul", { class: "attached", id: "pg-attached" });
  const images = [];
  const showAttached = () => attached.replaceChildren(...images.map((img, i) => h("li", null,
    img.name, " ", h("button", { type: "button", class: "link", onclick: () => {
      images.splice(i, 1);
      showAttached();
    } }, "remove"))));
  imageFile.addEventListener("change", async () => {
    for (const file of imageFile.files) {
      const url = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(file);
      });
      images.push({ name: file.name, url });
    }
    imageFile.value = "";
    showAttached();
  });
  imageUrl.addEventListener("change", () => {
    if (imageUrl.value.trim()) images.push({ name: imageUrl.value.trim(), url: imageUrl.value.trim() });
    imageUrl.value = "";
    showAttached();
  });
  const attach = h("div", { class: "attach", hidden: true },
    field("Images (files or a URL)", imageFile), imageUrl, attached);

  const log = h("div", { class: "chat-log", id: "pg-log", "aria-live": "polite" },
    h("p", { class: "muted empty" }, "Send a message to start. Answers stream in as they are generated."));
  const prompt = h("textarea", { id: "pg-input", rows: "3", placeholder: "Message (Enter sends, Shift+Enter: new line)" });
  const send = h("button", { type: "submit", class: "primary", id: "pg-send" }, "Send");
  const stop = h("button", { type: "button", id: "pg-stop", disabled: true }, "Stop");
  const clear = h("button", { type: "button", id: "pg-clear" }, "Clear");
  const showCode = h("button", { type: "button", id: "pg-code" }, "Show code");
  const formError = h("p", { class: "error", role: "alert", id: "pg-error" });
  const history = [];
  let controller = null;

  const params = h("aside", { class: "params card" },
    h("h2", null, "Model and parameters"),
    field("Model", models),
    field("System prompt", system),
    h("div", { class: "grid2" }, NUMBERS.map(([name, label, , hint]) => field(label, numbers[name], hint))),
    h("label", { class: "check" }, thinking, " enable_thinking"),
    field("thinking_budget", budget, "reasoning tokens, thinking only"),
    field("response_format", format), schema,
    field("tools (JSON list)", tools, "OpenAI-style function tools"),
    attach);

  const form = h("form", { class: "composer", id: "pg-form" }, prompt,
    h("div", { class: "row" }, send, stop, clear, h("span", { class: "grow" }), showCode), formError);

  root.append(h("div", { class: "playground" }, params,
    h("section", { class: "chat card" }, log, form)));

  try {
    const list = await api("/compatible-mode/v1/models");
    for (const model of list.data) models.append(h("option", { value: model.id }, model.id));
    const pick = () => {
      const card = list.data.find((m) => m.id === models.value) || {};
      attach.hidden = !(card.input_modalities || []).includes("image");
    };
    models.addEventListener("change", pick);
    pick();
  } catch (err) {
    formError.textContent = `Models could not be listed: ${err}`;
  }

  function requestBody(messages) {
    const body = { model: models.value, messages: [] };
    if (system.value.trim()) body.messages.push({ role: "system", content: system.value });
    body.messages.push(...messages);
    for (const [name] of NUMBERS) {
      const raw = numbers[name].value.trim();
      if (raw !== "") body[name] = Number(raw);
    }
    if (thinking.checked) {
      body.enable_thinking = true;
      if (budget.value.trim() !== "") body.thinking_budget = Number(budget.value);
    }
    if (format.value === "json_object") body.response_format = { type: "json_object" };
    if (format.value === "json_schema") {
      body.response_format = { type: "json_schema", json_schema: parseJson(schema.value, "json_schema") };
    }
    if (tools.value.trim()) body.tools = parseJson(tools.value, "tools");
    return body;
  }

  // A user turn: plain text, or the attached images followed by the text (shown models only).
  function userContent(text) {
    if (attach.hidden || !images.length) return text;
    return [...images.map((img) => ({ type: "image_url", image_url: { url: img.url } })),
      { type: "text", text }];
  }

  function bubble(role, text) {
    log.querySelector(".empty")?.remove();
    const el = h("div", { class: `msg ${role}` }, h("div", { class: "role" }, role),
      h("div", { class: "content" }, text));
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  async function submit(event) {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    formError.textContent = "";
    let body;
    try {
      body = requestBody([...history, { role: "user", content: userContent(text) }]);
    } catch (err) {
      formError.textContent = err.message;
      return;
    }
    history.push({ role: "user", content: userContent(text) });
    prompt.value = "";
    bubble("user", images.length ? `${text}\n[${images.map((i) => i.name).join(", ")}]` : text);
    images.length = 0;
    showAttached();
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    const reasoning = h("details", { class: "reasoning", open: true, hidden: true },
      h("summary", null, "Reasoning"), h("div", { class: "reasoning-text" }));
    const content = answer.querySelector(".content");
    answer.insertBefore(reasoning, content);
    const stats = h("div", { class: "stats" }, "waiting for the first token…");
    answer.append(stats);
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const started = performance.now();
    let firstAt = null;
    let usage = null;
    let finish = null;
    const toolCalls = [];
    try {
      const response = await fetch("/compatible-mode/v1/chat/completions", {
        method: "POST", signal: controller.signal,
        headers: { ...authHeaders(), "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      });
      if (!response.ok) {
        const raw = await response.text();
        let data = raw;
        try { data = JSON.parse(raw); } catch { /* keep the text */ }
        throw errorFrom(response, data);
      }
      for await (const data of sseData(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if ((delta.content || delta.reasoning_content || delta.tool_calls) && firstAt === null) {
            firstAt = performance.now();
            stats.textContent = "streaming…";
          }
          if (delta.reasoning_content) {
            reasoning.hidden = false;
            reasoning.lastChild.append(delta.reasoning_content);
          }
          if (delta.content) content.append(delta.content);
          for (const call of delta.tool_calls || []) {
            const slot = (toolCalls[call.index || 0] ||= { name: "", arguments: "" });
            slot.name += call.function?.name || "";
            slot.arguments += call.function?.arguments || "";
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        log.scrollTop = log.scrollHeight;
      }
      if (toolCalls.length) {
        answer.insertBefore(h("pre", { class: "tool-calls" },
          toolCalls.map((c) => `${c.name}(${c.arguments})`).join("\n")), stats);
      }
      history.push({ role: "assistant", content: content.textContent });
      stats.replaceChildren(...statLine(usage, firstAt && firstAt - started,
        performance.now() - started, finish));
    } catch (err) {
      history.pop();
      answer.classList.add("failed");
      stats.textContent = err.name === "AbortError" ? "stopped" : String(err);
    } finally {
      answer.classList.remove("streaming");
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  form.addEventListener("submit", submit);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  clear.addEventListener("click", () => {
    history.length = 0;
    log.replaceChildren();
  });
  showCode.addEventListener("click", () => {
    let body;
    try {
      const next = prompt.value.trim() || "你是谁？";
      body = requestBody([...history, { role: "user", content: next }]);
    } catch (err) {
      formError.textContent = err.message;
      return;
    }
    codeDialog(body);
  });
  prompt.focus();
}

function statLine(usage, ttft, total, finish) {
  const parts = [];
  if (usage) {
    const details = usage.prompt_tokens_details || {};
    const out = usage.completion_tokens_details || {};
    parts.push(h("span", { class: "usage" }, `input ${fmt(usage.prompt_tokens)} · output ${fmt(usage.completion_tokens)}` +
      (details.cached_tokens ? ` · cached ${fmt(details.cached_tokens)}` : "") +
      (details.image_tokens ? ` · image ${fmt(details.image_tokens)}` : "") +
      (out.reasoning_tokens ? ` · reasoning ${fmt(out.reasoning_tokens)}` : "") + " tokens"));
  }
  parts.push(h("span", { class: "ttft" }, `TTFT ${fmtMs(ttft)}`), h("span", null, `total ${fmtMs(total)}`));
  if (finish) parts.push(h("span", null, `finish ${finish}`));
  return parts;
}

function codeDialog(body) {
  const origin = location.origin;
  const pre = h("pre", { class: "code", id: "code-text" });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const select = (name, make) => {
    pre.textContent = make(body, origin);
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.textContent === name));
  };
  for (const [name, make] of GENERATORS) {
    tabs.append(h("button", { type: "button", role: "tab", onclick: () => select(name, make) }, name));
  }
  const copy = h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(pre.textContent) }, "Copy");
  const close = h("button", { type: "button", class: "primary", onclick: () => dialog.close() }, "Close");
  const dialog = h("dialog", { class: "code-dialog", id: "code-dialog" },
    h("h2", null, "This request as code"),
    h("p", { class: "muted" }, "The key is read from DASHSCOPE_API_KEY."),
    tabs, pre, h("div", { class: "row" }, h("span", { class: "grow" }), copy, close));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  select(...GENERATORS[0]);
  dialog.showModal();
}
