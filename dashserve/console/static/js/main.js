// Sign-in, navigation and the page router (#/playground, #/keys, #/usage, #/live).

import { api, ApiError, session } from "./api.js";

const PAGES = {
  playground: { load: () => import("./playground.js"), admin: false },
  keys: { load: () => import("./keys.js"), admin: true },
  usage: { load: () => import("./usage.js"), admin: false },
  live: { load: () => import("./live.js"), admin: true },
};

const $ = (id) => document.getElementById(id);
let cleanup = null;

async function identify(key) {
  try {
    return await api("/admin/v1/me", { key });
  } catch (err) {
    // A server without the platform routes: the key is checked by the APIs themselves.
    if (err instanceof ApiError && err.status === 404) {
      return { prefix: `${key.slice(0, 7)}…`, is_admin: false, workspace: null };
    }
    throw err;
  }
}

function showSignIn(message = "") {
  $("signin").hidden = false;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").replaceChildren();
  $("signin-error").textContent = message;
  $("signin-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("signin-key").value.trim();
  if (!key) return;
  $("signin-error").textContent = "";
  try {
    session.me = await identify(key);
  } catch (err) {
    $("signin-error").textContent = err.status === 401
      ? "This key is not valid on this server." : String(err);
    return;
  }
  session.save(key);
  $("signin-key").value = "";
  $("signin").hidden = true;
  route();
}

function signOut() {
  session.clear();
  if (cleanup) cleanup();
  cleanup = null;
  showSignIn();
}

async function route() {
  if (!session.key) return showSignIn();
  if (!session.me) {
    try {
      session.me = await identify(session.key);
    } catch (err) {
      session.clear();
      return showSignIn(err.status === 401 ? "Signed out: the key is no longer valid." : String(err));
    }
  }
  const admin = Boolean(session.me.is_admin);
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-key").textContent = `${session.me.name || session.me.prefix}` +
    ` · ${admin ? "admin" : "key"}${session.me.workspace ? ` · ${session.me.workspace}` : ""}`;
  for (const link of $("nav").querySelectorAll("a[data-admin]")) link.hidden = !admin;
  let name = location.hash.replace(/^#\/?/, "").split("?")[0] || "playground";
  if (!PAGES[name] || (PAGES[name].admin && !admin)) name = "playground";
  for (const link of $("nav").querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  if (cleanup) cleanup();
  cleanup = null;
  const root = $("page");
  root.replaceChildren();
  root.dataset.page = name;
  const module = await PAGES[name].load();
  cleanup = (await module.render(root, { admin, me: session.me })) || null;
}

$("signin-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
