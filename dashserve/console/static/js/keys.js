// Keys (admin): list, create (the secret shown once), revoke.

import { api } from "./api.js";
import { field, h } from "./dom.js";

const day = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "–");

export async function render(root) {
  const error = h("p", { class: "error", role: "alert", id: "keys-error" });
  const secretBox = h("div", { class: "secret card", id: "key-secret", hidden: true });
  const showRevoked = h("input", { type: "checkbox", id: "keys-revoked" });
  const tbody = h("tbody");
  const inputs = {
    name: h("input", { name: "name", placeholder: "ci" }),
    workspace: h("input", { name: "workspace", placeholder: "default" }),
    models: h("input", { name: "models", placeholder: "all models" }),
    rpm: h("input", { type: "number", name: "rpm", min: "1", placeholder: "no limit" }),
    tpm: h("input", { type: "number", name: "tpm", min: "1", placeholder: "no limit" }),
  };
  const isAdmin = h("input", { type: "checkbox", name: "is_admin" });
  const form = h("form", { class: "card create-key", id: "key-form" },
    h("h2", null, "Create a key"),
    h("div", { class: "grid5" },
      field("Name", inputs.name), field("Workspace", inputs.workspace),
      field("Models", inputs.models, "comma-separated"), field("rpm", inputs.rpm),
      field("tpm", inputs.tpm)),
    h("div", { class: "row" }, h("label", { class: "check" }, isAdmin, " admin key"),
      h("span", { class: "grow" }), h("button", { type: "submit", class: "primary" }, "Create key")));

  root.append(h("div", { class: "page-head" }, h("h1", null, "API keys"),
    h("label", { class: "check" }, showRevoked, " show revoked")),
  error, secretBox, form,
  h("div", { class: "card table-wrap" }, h("table", { id: "keys-table" },
    h("thead", null, h("tr", null, ["Key", "Name", "Workspace", "Models", "rpm", "tpm",
      "Role", "Created", "Last used", "Status", ""].map((t) => h("th", null, t)))), tbody)));

  async function load() {
    error.textContent = "";
    let list;
    try {
      list = await api(`/admin/v1/keys?include_revoked=${showRevoked.checked}`);
    } catch (err) {
      error.textContent = String(err);
      return;
    }
    tbody.replaceChildren(...list.data.map((key) => h("tr", { "data-prefix": key.prefix },
      h("td", null, h("code", null, key.prefix)), h("td", null, key.name || ""),
      h("td", null, key.workspace), h("td", null, key.models ? key.models.join(", ") : "all"),
      h("td", { class: "num" }, key.rpm ?? "–"), h("td", { class: "num" }, key.tpm ?? "–"),
      h("td", null, key.is_admin ? "admin" : "key"), h("td", null, day(key.created_at)),
      h("td", null, day(key.last_used_at)),
      h("td", null, h("span", { class: `badge ${key.is_active ? "ok" : "off"}` },
        key.revoked_at ? "revoked" : key.is_active ? "active" : "expired")),
      h("td", null, key.revoked_at ? "" : h("button", {
        type: "button", class: "danger small", onclick: () => revoke(key),
      }, "Revoke")))));
    if (!list.data.length) tbody.append(h("tr", null, h("td", { colspan: "11", class: "muted" }, "No keys.")));
  }

  async function revoke(key) {
    if (!confirm(`Revoke ${key.prefix}${key.name ? ` (${key.name})` : ""}? Its next request fails.`)) return;
    try {
      await api(`/admin/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    } catch (err) {
      error.textContent = String(err);
    }
    await load();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = { is_admin: isAdmin.checked };
    if (inputs.name.value.trim()) body.name = inputs.name.value.trim();
    if (inputs.workspace.value.trim()) body.workspace = inputs.workspace.value.trim();
    const models = inputs.models.value.split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    for (const name of ["rpm", "tpm"]) {
      if (inputs[name].value.trim()) body[name] = Number(inputs[name].value);
    }
    let created;
    try {
      created = await api("/admin/v1/keys", { method: "POST", body });
    } catch (err) {
      error.textContent = String(err);
      return;
    }
    form.reset();
    const secret = h("code", { id: "key-secret-value" }, created.secret);
    secretBox.replaceChildren(
      h("strong", null, `Key ${created.prefix} created. Copy its secret now: it is not shown again.`),
      h("div", { class: "row" }, secret,
        h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(created.secret) }, "Copy"),
        h("button", { type: "button", onclick: () => { secretBox.hidden = true; secretBox.replaceChildren(); } }, "Done")));
    secretBox.hidden = false;
    await load();
  });
  showRevoked.addEventListener("change", load);
  await load();
}
