// The server's own APIs, called with the key kept in this tab's sessionStorage.

const STORAGE = "dashserve.console.key";

export const session = {
  get key() { return sessionStorage.getItem(STORAGE); },
  save(key) { sessionStorage.setItem(STORAGE, key); },
  clear() { sessionStorage.removeItem(STORAGE); this.me = null; },
  me: null, // what /admin/v1/me says about the key
};

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
  toString() {
    const id = this.requestId ? ` (request ${this.requestId})` : "";
    return `${this.status} ${this.code}: ${this.message}${id}`;
  }
}

// Both error shapes: native {code, message, request_id}, compatible {error: {...}, request_id}.
export function errorFrom(response, data) {
  const body = data && typeof data === "object" ? data : {};
  const inner = body.error && typeof body.error === "object" ? body.error : body;
  const message = inner.message || body.detail || (typeof data === "string" && data) ||
    response.statusText;
  return new ApiError(response.status, inner.code || inner.type || response.statusText,
    typeof message === "string" ? message : JSON.stringify(message),
    body.request_id || response.headers.get("x-request-id"));
}

export function authHeaders(key = session.key) {
  return { Authorization: `Bearer ${key}` };
}

export async function api(path, { method = "GET", body, key, signal } = {}) {
  const headers = authHeaders(key || session.key);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!response.ok) throw errorFrom(response, data);
  return data;
}

// The data of each server-sent event of a streamed response.
export async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}
