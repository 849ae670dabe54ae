// The playground's request as curl, openai SDK and dashscope SDK code (the key from the
// environment, never the signed-in key).

// Parameters the openai SDK has no keyword for: they go in extra_body.
const OPENAI_EXTRAS = new Set(["top_k", "enable_thinking", "thinking_budget"]);
const SKIP = new Set(["model", "messages", "stream", "stream_options"]);

export function pyLiteral(value, indent = 0) {
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const flat = `[${value.map((v) => pyLiteral(v)).join(", ")}]`;
    if (flat.length <= 72) return flat;
    return `[\n${value.map((v) => pad + pyLiteral(v, indent + 4)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  const flat = `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v)}`).join(", ")}}`;
  if (flat.length <= 72) return flat;
  const lines = entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pyLiteral(v, indent + 4)}`);
  return `{\n${lines.join(",\n")},\n${end}}`;
}

function streamed(body) {
  return { ...body, stream: true, stream_options: { include_usage: true } };
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

export function curlCode(body, origin) {
  return [
    `curl -N ${origin}/compatible-mode/v1/chat/completions \\`,
    `  -H "Authorization: Bearer $DASHSCOPE_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(JSON.stringify(streamed(body), null, 2))}`,
  ].join("\n");
}

export function openaiCode(body, origin) {
  const args = [`    model=${pyLiteral(body.model)},`,
    `    messages=${pyLiteral(body.messages, 4)},`];
  const extra = {};
  for (const [name, value] of Object.entries(body)) {
    if (SKIP.has(name)) continue;
    if (OPENAI_EXTRAS.has(name)) extra[name] = value;
    else args.push(`    ${name}=${pyLiteral(value, 4)},`);
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${pyLiteral(extra, 4)},`);
  args.push("    stream=True,", '    stream_options={"include_usage": True},');
  return `import os

from openai import OpenAI

client = OpenAI(api_key=os.getenv("DASHSCOPE_API_KEY"),
                base_url="${origin}/compatible-mode/v1")
stream = client.chat.completions.create(
${args.join("\n")}
)
for chunk in stream:
    if chunk.choices:
        delta = chunk.choices[0].delta
        print(getattr(delta, "reasoning_content", None) or delta.content or "", end="", flush=True)
    elif chunk.usage:
        print("\\n", chunk.usage)
`;
}

export function dashscopeCode(body, origin) {
  const args = [`    model=${pyLiteral(body.model)},`,
    `    messages=${pyLiteral(body.messages, 4)},`,
    '    result_format="message",'];
  for (const [name, value] of Object.entries(body)) {
    if (!SKIP.has(name)) args.push(`    ${name}=${pyLiteral(value, 4)},`);
  }
  args.push("    stream=True,", "    incremental_output=True,");
  return `import os

import dashscope
from dashscope import Generation

dashscope.base_http_api_url = "${origin}/api/v1"
responses = Generation.call(
    api_key=os.getenv("DASHSCOPE_API_KEY"),
${args.join("\n")}
)
for response in responses:
    message = response.output.choices[0].message
    print(message.get("reasoning_content") or message.content or "", end="", flush=True)
print("\\n", response.usage)
`;
}

export const GENERATORS = [
  ["curl", curlCode],
  ["openai SDK", openaiCode],
  ["dashscope SDK", dashscopeCode],
];
