/*
 * membrane operator console: a dependency-free, build-free single page that the admin listener embeds
 * and serves at `/` (with `/console.js` and `/console.css`). It talks only to the admin API (v1) of the
 * same origin, sending `Authorization: Bearer <token>` on every request; the token comes from the URL
 * fragment `#token=...` (removed from the address bar at once) or from the token form, and is kept in
 * sessionStorage. It lists sessions, held calls (approve / deny / edit-and-send, each guarded by the held
 * message's digest) and plugins (with a reload button), follows GET /v1/events through fetch() + a
 * ReadableStream (EventSource cannot send headers), parses the SSE framing itself, refreshes the affected
 * list on each event, reconnects with a backoff, and refreshes everything every 10 s as a fallback.
 * All text coming from the API is inserted with textContent / createElement, never as HTML.
 */
"use strict";

(() => {
  const TOKEN_KEY = "membrane.adminToken";
  const FALLBACK_REFRESH_MS = 10_000;
  const BACKOFF_MIN_MS = 1_000;
  const BACKOFF_MAX_MS = 30_000;
  const STABLE_STREAM_MS = 5_000; // a stream open at least this long resets the backoff
  const SESSION_PAGE_LIMIT = 500;
  const SESSION_MAX_PAGES = 20;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    clockSkewMs: 0, // server time minus local time, estimated from the Date header
    stream: null, // {controller, generation}
    streamGeneration: 0,
    backoffMs: BACKOFF_MIN_MS,
    reconnectTimer: null,
    heldCards: new Map(), // id -> {key, node}
    lastReloadClickAt: 0,
  };

  // ---------------------------------------------------------------- DOM helpers

  /** createElement with attributes and children; strings become text nodes (never parsed as HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
        else if (value === true) node.setAttribute(key, "");
        else node.setAttribute(key, String(value));
      }
    }
    appendChildren(node, children);
    return node;
  }

  function appendChildren(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function shortId(id) {
    const s = id == null ? "" : String(id);
    return s.length > 8 ? s.slice(0, 8) : s;
  }

  function dash(value) {
    return value === undefined || value === null || value === "" ? "—" : String(value);
  }

  function num(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : 0;
  }

  function fmtMicros(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "—";
    return value >= 100 ? String(Math.round(value)) : String(Math.round(value * 10) / 10);
  }

  function serverNow() {
    return Date.now() + state.clockSkewMs;
  }

  function parseTime(iso) {
    if (!iso) return NaN;
    const t = Date.parse(iso);
    return Number.isFinite(t) ? t : NaN;
  }

  function fmtDuration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(total / 86400);
    const h = Math.floor((total % 86400) / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m > 0) return `${m}m ${String(s).padStart(2, "0")}s`;
    return `${s}s`;
  }

  function fmtAbsolute(iso) {
    const t = parseTime(iso);
    return Number.isFinite(t) ? `${new Date(t).toLocaleString()} (${iso})` : dash(iso);
  }

  /** An element showing "<duration> ago", kept current by the 1 s ticker. */
  function agoNode(iso) {
    const t = parseTime(iso);
    if (!Number.isFinite(t)) return el("span", { class: "muted", text: dash(iso) });
    const node = el("time", { datetime: iso, title: fmtAbsolute(iso), class: "ago", dataset: { since: String(t) } });
    updateAgo(node);
    return node;
  }

  function updateAgo(node) {
    const t = Number(node.dataset.since);
    node.textContent = `${fmtDuration(serverNow() - t)} ago`;
  }

  /** An element counting down to a deadline, kept current by the 1 s ticker. */
  function countdownNode(iso) {
    const t = parseTime(iso);
    if (!Number.isFinite(t)) return el("span", { class: "countdown muted", text: dash(iso) });
    const node = el("span", { class: "countdown", title: `deadline ${fmtAbsolute(iso)}`, dataset: { deadline: String(t) } });
    updateCountdown(node);
    return node;
  }

  function updateCountdown(node) {
    const left = Number(node.dataset.deadline) - serverNow();
    node.classList.toggle("urgent", left < 30_000);
    node.classList.toggle("expired", left <= 0);
    node.textContent = left > 0 ? `${fmtDuration(left)} left` : "deadline passed";
  }

  function tick() {
    for (const node of document.querySelectorAll("[data-since]")) updateAgo(node);
    for (const node of document.querySelectorAll("[data-deadline]")) updateCountdown(node);
  }

  // ---------------------------------------------------------------- notices

  /**
   * Show a notice. `kind` is "info", "ok" or "error". Notices with the same `key` replace each other,
   * so a repeating failure (e.g. the 10 s refresh while the proxy is down) shows once.
   */
  function notice(text, kind = "info", key = null) {
    const box = $("notices");
    if (key) {
      for (const old of box.querySelectorAll("[data-key]")) {
        if (old.dataset.key === key) old.remove();
      }
    }
    const close = el("button", { type: "button", class: "close", title: "Dismiss", "aria-label": "Dismiss", text: "×" });
    const node = el("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
      el("span", { class: "notice-text", text }), close);
    if (key) node.dataset.key = key;
    close.addEventListener("click", () => node.remove());
    box.prepend(node);
    while (box.children.length > 6) box.lastElementChild.remove();
    const ttl = kind === "error" ? 20_000 : 8_000;
    setTimeout(() => node.remove(), ttl);
    return node;
  }

  function clearNotice(key) {
    for (const old of $("notices").querySelectorAll("[data-key]")) {
      if (old.dataset.key === key) old.remove();
    }
  }

  function setStatus(text, kind) {
    const node = $("status");
    node.textContent = text;
    node.className = `status status-${kind}`;
  }

  // ---------------------------------------------------------------- token

  function readTokenFromFragment() {
    const hash = window.location.hash;
    if (!hash || hash.length < 2) return null;
    const params = new URLSearchParams(hash.slice(1));
    const token = params.get("token");
    if (token === null) return null;
    params.delete("token");
    const rest = params.toString();
    const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
    history.replaceState(history.state, "", url);
    return token.trim() || null;
  }

  function loadToken() {
    const fromFragment = readTokenFromFragment();
    if (fromFragment) {
      try { sessionStorage.setItem(TOKEN_KEY, fromFragment); } catch (_) { /* storage disabled: keep in memory */ }
      return fromFragment;
    }
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function setToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled */ }
  }

  function showTokenForm(message) {
    const form = $("token-form");
    $("token-message").textContent = message || "";
    form.hidden = false;
    $("token").value = "";
    $("token").focus();
  }

  function hideTokenForm() {
    $("token-form").hidden = true;
    $("token-message").textContent = "";
  }

  class Unauthorized extends Error {}

  /** Forget the token, stop the live stream and ask for a new token. */
  function unauthorized(detail) {
    const wasConnected = state.token !== null;
    setToken(null);
    stopStream();
    setStatus("unauthorized", "error");
    const msg = `The admin API rejected the token (401)${detail ? `: ${detail}` : ""}. Enter a valid admin token.`;
    if (wasConnected) notice(msg, "error", "auth");
    showTokenForm(msg);
  }

  // ---------------------------------------------------------------- API

  function noteServerDate(response) {
    const date = response.headers.get("Date");
    if (!date) return;
    const server = Date.parse(date);
    if (!Number.isFinite(server)) return;
    const skew = server - Date.now();
    // The Date header has 1 s resolution: only correct clearly wrong local clocks.
    state.clockSkewMs = Math.abs(skew) > 2_000 ? skew : 0;
  }

  async function readBody(response) {
    const text = await response.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch (_) { return text; }
  }

  function errorText(body, response) {
    if (body && typeof body === "object" && typeof body.error === "string") return body.error;
    if (typeof body === "string" && body.trim()) return body.trim().slice(0, 300);
    return `HTTP ${response.status} ${response.statusText || ""}`.trim();
  }

  /**
   * Call the admin API. Resolves to {ok, status, body, error}; throws Unauthorized on 401 (after
   * showing the token form) and rethrows network failures.
   */
  async function api(method, path, body) {
    const token = state.token;
    if (!token) throw new Unauthorized("no token");
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    noteServerDate(response);
    const data = await readBody(response);
    if (response.status === 401) {
      // Ignore a late 401 for a token that has since been replaced.
      if (state.token === token) unauthorized(errorText(data, response));
      throw new Unauthorized(errorText(data, response));
    }
    return { ok: response.ok, status: response.status, body: data, error: response.ok ? null : errorText(data, response) };
  }

  /** Run a refresh function; report failures once (keyed) instead of throwing. */
  async function guarded(what, fn) {
    try {
      await fn();
      clearNotice(`refresh-${what}`);
    } catch (err) {
      if (err instanceof Unauthorized) return;
      notice(`Could not load ${what}: ${err && err.message ? err.message : err}`, "error", `refresh-${what}`);
    }
  }

  /** Wrap an async function so that concurrent calls coalesce: at most one run at a time, plus one rerun. */
  function coalesced(fn) {
    let running = false;
    let again = false;
    return async function run() {
      if (running) { again = true; return; }
      running = true;
      try {
        do { again = false; await fn(); } while (again && state.token);
      } finally {
        running = false;
      }
    };
  }

  // ---------------------------------------------------------------- sessions

  async function loadSessions() {
    const sessions = [];
    let cursor = null;
    let truncated = false;
    for (let page = 0; page < SESSION_MAX_PAGES; page++) {
      const params = new URLSearchParams({ limit: String(SESSION_PAGE_LIMIT) });
      if (cursor) params.set("after", cursor);
      const res = await api("GET", `v1/sessions?${params}`);
      if (!res.ok) throw new Error(res.error);
      const list = res.body && Array.isArray(res.body.sessions) ? res.body.sessions : [];
      sessions.push(...list);
      cursor = res.body ? res.body.next : null;
      if (!cursor) break;
      if (page === SESSION_MAX_PAGES - 1) truncated = true;
    }
    renderSessions(sessions, truncated);
  }

  function renderSessions(sessions, truncated) {
    const body = $("sessions-body");
    const rows = sessions.map(sessionRow);
    if (rows.length === 0) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: "10", text: "No sessions." })));
    }
    body.replaceChildren(...rows);
    $("sessions-count").textContent = String(sessions.length);
    $("sessions-note").textContent = truncated ? `showing the first ${sessions.length}` : "";
  }

  function sessionRow(s) {
    const id = String(s.id ?? "");
    const tags = [];
    if (s.status && s.status !== "active") tags.push(el("span", { class: "tag", text: s.status }));
    if (s.live === false) tags.push(el("span", { class: "tag tag-dim", title: "not served by this process", text: "not live" }));

    const client = s.client_info
      ? [dash(s.client_info.name), s.client_info.version ? el("span", { class: "muted", text: ` ${s.client_info.version}` }) : null]
      : [el("span", { class: "muted", text: "—" })];
    const serverTitle = s.server_info ? `server: ${dash(s.server_info.name)} ${s.server_info.version || ""}`.trim() : undefined;

    const m = s.messages || {};
    const v = s.verdicts || {};
    const verdictTitle = `blocked ${num(v.blocked)}, mocked ${num(v.mocked)}, modified ${num(v.modified)}, held ${num(v.held)}`;
    const stateBytes = s.plugin_state_bytes && typeof s.plugin_state_bytes === "object"
      ? Object.entries(s.plugin_state_bytes).map(([k, b]) => `${k}: ${b} B`).join(", ")
      : "";

    const end = el("button", { type: "button", class: "end danger small", title: `End session ${id}`, text: "End" });
    end.addEventListener("click", () => endSession(id, end));

    return el("tr", { dataset: { sessionId: id } },
      el("td", { class: "mono", title: id }, shortId(id), " ", tags),
      el("td", {}, s.principal == null ? el("span", { class: "muted", text: "—" }) : String(s.principal)),
      el("td", {}, `${dash(s.client_transport)} → ${dash(s.upstream_transport)}`),
      el("td", { class: "mono" }, dash(s.protocol_version)),
      el("td", { title: serverTitle }, client),
      el("td", { class: "num", title: `${verdictTitle}${stateBytes ? `; plugin state ${stateBytes}` : ""}` },
        `${num(m.client_to_server)} / ${num(m.server_to_client)}`),
      el("td", { class: "num" }, String(num(s.pending_requests))),
      el("td", {}, agoNode(s.created_at)),
      el("td", {}, s.last_active ? agoNode(s.last_active) : el("span", { class: "muted", text: "—" })),
      el("td", { class: "actions" }, end),
    );
  }

  async function endSession(id, button) {
    if (!window.confirm(`End session ${id}?\n\nThe client's session is closed and its pending calls are dropped.`)) return;
    button.disabled = true;
    try {
      const res = await api("DELETE", `v1/sessions/${encodeURIComponent(id)}`);
      if (res.ok) notice(`Session ${shortId(id)} ended.`, "ok");
      else if (res.status === 404) notice(`Session ${shortId(id)} no longer exists (404): ${res.error}`, "error");
      else notice(`Could not end session ${shortId(id)} (HTTP ${res.status}): ${res.error}`, "error");
    } catch (err) {
      if (!(err instanceof Unauthorized)) notice(`Could not end session ${shortId(id)}: ${err.message || err}`, "error");
    } finally {
      button.disabled = false;
      refreshSessions();
    }
  }

  // ---------------------------------------------------------------- held calls

  async function loadHeld() {
    const res = await api("GET", "v1/held");
    if (!res.ok) throw new Error(res.error);
    renderHeld(Array.isArray(res.body) ? res.body : []);
  }

  /**
   * Keyed update: existing cards are kept (an open editor survives refreshes); cards are rebuilt only
   * when the held message's digest changes, and removed when the message is no longer held.
   */
  function renderHeld(list) {
    const container = $("held-list");
    const seen = new Set();
    const ordered = [];
    for (const h of list) {
      const id = String(h.id);
      const key = `${id}|${h.digest}`;
      seen.add(id);
      let entry = state.heldCards.get(id);
      if (!entry || entry.key !== key) {
        const node = heldCard(h);
        if (entry) entry.node.replaceWith(node);
        entry = { key, node };
        state.heldCards.set(id, entry);
      }
      ordered.push(entry.node);
    }
    for (const [id, entry] of state.heldCards) {
      if (!seen.has(id)) {
        entry.node.remove();
        state.heldCards.delete(id);
      }
    }
    // Reorder without moving nodes that are already in place (keeps focus in an open editor).
    const empty = container.querySelector(".held-empty");
    if (empty && ordered.length) empty.remove();
    ordered.forEach((node, i) => {
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    });
    if (!ordered.length && !container.querySelector(".held-empty")) {
      container.replaceChildren(el("p", { class: "held-empty muted", text: "No held calls." }));
    }
    $("held-count").textContent = String(list.length);
    $("held-count").classList.toggle("alert", list.length > 0);
  }

  function removeHeldCard(id) {
    const entry = state.heldCards.get(String(id));
    if (entry) {
      entry.node.remove();
      state.heldCards.delete(String(id));
    }
  }

  function field(label, ...value) {
    return el("div", { class: "field" }, el("span", { class: "label", text: label }), el("span", { class: "value" }, value));
  }

  function prettyJson(value) {
    try { return JSON.stringify(value, null, 2); } catch (_) { return String(value); }
  }

  function heldCard(h) {
    const id = String(h.id);
    const session = String(h.session ?? "");
    const direction = h.direction === "server_to_client" ? "server → client" : "client → server";

    const title = el("div", { class: "held-title" },
      el("span", { class: "held-id mono", text: `#${id}` }),
      el("span", { class: "held-method mono", text: dash(h.method) }),
      h.tool != null ? el("strong", { class: "held-tool mono", text: String(h.tool) }) : null,
      el("span", { class: "spacer" }),
      countdownNode(h.deadline),
    );

    const meta = el("div", { class: "held-meta" },
      field("session", el("span", { class: "mono", title: session, text: shortId(session) })),
      field("direction", direction),
      field("plugin", h.plugin == null ? "—" : String(h.plugin)),
      field("held since", agoNode(h.held_since)),
      field("chain", h.chain_version == null ? "—" : `v${h.chain_version}`),
      field("digest", el("span", { class: "mono digest", title: String(h.digest ?? ""), text: shortDigest(h.digest) })),
    );

    const args = h.arguments === undefined || h.arguments === null
      ? el("p", { class: "muted no-args", text: "No arguments." })
      : el("pre", { class: "arguments", text: prettyJson(h.arguments) });

    const approve = el("button", { type: "button", class: "approve", text: "Approve" });
    const deny = el("button", { type: "button", class: "deny", text: "Deny" });
    const edit = el("button", { type: "button", class: "edit", text: "Edit" });
    const buttons = [approve, deny, edit];

    const textarea = el("textarea", { class: "modify-json", spellcheck: "false", rows: "12", "aria-label": `Replacement JSON-RPC message for held call ${id}` });
    textarea.value = prettyJson(h.message);
    const send = el("button", { type: "button", class: "send-modified", text: "Send modified" });
    const cancel = el("button", { type: "button", class: "cancel", text: "Cancel" });
    const editor = el("div", { class: "editor", hidden: true }, textarea, el("div", { class: "buttons" }, send, cancel));

    const card = el("article", { class: "held", dataset: { heldId: id } },
      title, meta, args,
      el("div", { class: "buttons" }, buttons),
      editor,
    );

    const setBusy = (busy) => {
      for (const b of [...buttons, send]) b.disabled = busy;
      card.classList.toggle("busy", busy);
    };

    approve.addEventListener("click", () => settleHeld(h, "approve", { digest: h.digest }, setBusy));
    deny.addEventListener("click", () => {
      const reason = window.prompt(`Deny held call #${id}${h.tool ? ` (${h.tool})` : ""}?\nOptional reason, sent to the client:`, "");
      if (reason === null) return; // cancelled
      const body = { digest: h.digest };
      if (reason.trim()) body.reason = reason.trim();
      settleHeld(h, "deny", body, setBusy);
    });
    edit.addEventListener("click", () => {
      editor.hidden = !editor.hidden;
      edit.classList.toggle("active", !editor.hidden);
      if (!editor.hidden) textarea.focus();
    });
    cancel.addEventListener("click", () => {
      textarea.value = prettyJson(h.message);
      editor.hidden = true;
      edit.classList.remove("active");
    });
    send.addEventListener("click", () => {
      let message;
      try {
        message = JSON.parse(textarea.value);
      } catch (err) {
        notice(`Held #${id}: the edited message is not valid JSON (${err.message}).`, "error");
        textarea.focus();
        return;
      }
      if (!message || typeof message !== "object" || Array.isArray(message)) {
        notice(`Held #${id}: the replacement must be a JSON-RPC message object.`, "error");
        return;
      }
      settleHeld(h, "modify", { digest: h.digest, message }, setBusy);
    });

    return card;
  }

  function shortDigest(digest) {
    if (typeof digest !== "string") return "—";
    const hex = digest.startsWith("sha256:") ? digest.slice(7) : digest;
    return `sha256:${hex.slice(0, 12)}…`;
  }

  const PAST = { approve: "approved", deny: "denied", modify: "modified" };

  async function settleHeld(h, action, body, setBusy) {
    const id = String(h.id);
    const label = `Held #${id}`; // no tool name here: the card is the only place showing it
    setBusy(true);
    let refresh = true;
    try {
      const res = await api("POST", `v1/held/${encodeURIComponent(id)}/${action}`, body);
      if (res.ok) {
        const settled = res.body && res.body.settled ? res.body.settled : PAST[action];
        clearNotice(`held-${id}`);
        notice(`${label} ${settled}.`, "ok");
        removeHeldCard(id);
      } else if (res.status === 409) {
        notice(`${label} was not ${PAST[action]} (409): ${res.error}`, "error");
      } else if (res.status === 404) {
        notice(`${label} is no longer held (404): ${res.error}`, "error");
      } else if (res.status === 400) {
        notice(`${label} was not ${PAST[action]} (400): ${res.error}`, "error");
      } else {
        notice(`${label}: HTTP ${res.status}: ${res.error}`, "error");
      }
    } catch (err) {
      if (err instanceof Unauthorized) refresh = false;
      else notice(`${label}: request failed: ${err.message || err}`, "error");
    } finally {
      setBusy(false);
      if (refresh) refreshHeld();
    }
  }

  // ---------------------------------------------------------------- plugins

  async function loadPlugins() {
    const res = await api("GET", "v1/plugins");
    if (!res.ok) throw new Error(res.error);
    renderPlugins(Array.isArray(res.body) ? res.body : []);
  }

  function renderPlugins(plugins) {
    const rows = plugins.map((p, i) => {
      const m = p.metrics || {};
      const failures = num(m.traps) + num(m.timeouts) + num(m.bad_actions) + num(m.unavailable);
      const failTitle = `traps ${num(m.traps)}, timeouts ${num(m.timeouts)}, bad actions ${num(m.bad_actions)}, unavailable ${num(m.unavailable)}`;
      const callsTitle = `continued ${num(m.continued)}, modified ${num(m.modified)}, blocked ${num(m.blocked)}, mocked ${num(m.mocked)}, paused ${num(m.paused)}, delayed ${num(m.delayed)}`;
      return el("tr", { dataset: { plugin: String(p.name ?? "") } },
        el("td", { class: "num muted", text: String(i + 1) }),
        el("td", { title: `${dash(p.path)}\n${dash(p.hash)}` }, el("strong", { text: dash(p.name) }),
          p.mode === "audit" ? [" ", el("span", { class: "tag tag-dim", title: "verdicts logged, not enforced", text: "audit" })] : null),
        el("td", { class: "mono", text: dash(p.contract) }),
        el("td", {}, el("span", { class: `tag ${p.on_error === "block" ? "tag-block" : "tag-dim"}`, text: dash(p.on_error) })),
        el("td", { class: "num", title: callsTitle, text: String(num(m.calls)) }),
        el("td", { class: "num", text: String(num(m.blocked)) }),
        el("td", { class: "num", text: String(num(m.paused)) }),
        el("td", { class: `num${failures > 0 ? " bad" : ""}`, title: failTitle, text: String(failures) }),
        el("td", { class: "num", text: fmtMicros(m.p50_us) }),
        el("td", { class: "num", text: fmtMicros(m.p99_us) }),
      );
    });
    if (rows.length === 0) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "10", text: "No plugins loaded." })));
    $("plugins-body").replaceChildren(...rows);
    $("plugins-count").textContent = String(plugins.length);
  }

  function listText(label, list) {
    return `${label}: ${Array.isArray(list) && list.length ? list.join(", ") : "none"}`;
  }

  function reloadSummary(r) {
    return [listText("loaded", r && r.loaded), listText("kept", r && r.kept), listText("removed", r && r.removed)].join("; ");
  }

  function showReloadResult(ok, text) {
    const box = $("reload-result");
    box.hidden = false;
    box.className = `reload-result ${ok ? "ok" : "error"}`;
    box.replaceChildren(
      el("strong", { text: ok ? "Reload succeeded" : "Reload failed" }),
      el("span", { class: "muted", text: ` at ${new Date().toLocaleTimeString()} — ` }),
      el("span", { text }),
    );
  }

  async function reloadPlugins() {
    const button = $("reload");
    button.disabled = true;
    state.lastReloadClickAt = Date.now();
    try {
      const res = await api("POST", "v1/reload");
      if (res.ok) {
        const text = reloadSummary(res.body);
        showReloadResult(true, text);
        notice(`Plugins reloaded — ${text}.`, "ok", "reload");
      } else {
        showReloadResult(false, `HTTP ${res.status}: ${res.error}`);
        notice(`Reload failed (HTTP ${res.status}): ${res.error}`, "error", "reload");
      }
    } catch (err) {
      if (!(err instanceof Unauthorized)) {
        showReloadResult(false, String(err.message || err));
        notice(`Reload failed: ${err.message || err}`, "error", "reload");
      }
    } finally {
      button.disabled = false;
      refreshPlugins();
    }
  }

  // ---------------------------------------------------------------- refresh

  const refreshSessions = coalesced(() => guarded("sessions", loadSessions));
  const refreshHeld = coalesced(() => guarded("held calls", loadHeld));
  const refreshPlugins = coalesced(() => guarded("plugins", loadPlugins));

  function refreshAll() {
    if (!state.token) return Promise.resolve();
    return Promise.all([refreshSessions(), refreshHeld(), refreshPlugins()]);
  }

  // ---------------------------------------------------------------- live events (SSE over fetch)

  /**
   * Incremental SSE parser: feed it decoded text chunks; it calls onEvent(type, data) for every
   * complete event (terminated by a blank line). Handles \n, \r\n and \r line ends, multi-line data,
   * comments (": ...") and a field without a value.
   */
  function sseParser(onEvent) {
    let buffer = "";
    let eventType = "";
    let data = [];
    let pendingCR = false;

    function line(text) {
      if (text === "") {
        if (data.length) onEvent(eventType || "message", data.join("\n"));
        eventType = "";
        data = [];
        return;
      }
      if (text.startsWith(":")) return;
      const colon = text.indexOf(":");
      let name = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") eventType = value;
      else if (name === "data") data.push(value);
      // "id" and "retry" are not used by this console.
    }

    return function feed(chunk) {
      if (pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
      pendingCR = false;
      buffer += chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c === "\n" || c === "\r") {
          line(buffer.slice(start, i));
          if (c === "\r") {
            if (i + 1 < buffer.length) {
              if (buffer[i + 1] === "\n") i++;
            } else {
              pendingCR = true;
            }
          }
          start = i + 1;
        }
      }
      buffer = buffer.slice(start);
    };
  }

  function handleEvent(type, raw) {
    let data = null;
    try { data = JSON.parse(raw); } catch (_) { data = raw; }
    switch (type) {
      case "held":
        refreshHeld();
        refreshPlugins(); // the holder's verdict counts changed
        if (data && typeof data === "object" && data.id !== undefined) {
          notice(`New held call #${data.id} is waiting for a decision.`, "info", `held-${data.id}`);
        }
        break;
      case "settled":
        if (data && typeof data === "object" && data.id !== undefined) {
          clearNotice(`held-${data.id}`);
          if (data.by && data.by !== "admin API") {
            notice(`Held #${data.id} ${dash(data.outcome)} (by ${data.by}).`, "info");
          }
        }
        refreshHeld();
        refreshSessions(); // verdict / pending counters changed
        refreshPlugins();
        break;
      case "session_opened":
      case "session_closed":
        refreshSessions();
        break;
      case "reload": {
        refreshPlugins();
        const fromButton = Date.now() - state.lastReloadClickAt < 5_000;
        if (data && typeof data === "object" && data.ok === false) {
          notice(`Plugin reload failed: ${dash(data.error)}`, "error", "reload");
        } else if (!fromButton) {
          notice(`Plugins reloaded — ${reloadSummary(data)}.`, "info", "reload");
        }
        break;
      }
      default:
        break; // unknown event types are ignored
    }
  }

  function stopStream() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    state.streamGeneration++;
    if (state.stream) {
      try { state.stream.controller.abort(); } catch (_) { /* ignore */ }
      state.stream = null;
    }
  }

  function scheduleReconnect(reason) {
    const delay = state.backoffMs;
    state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
    setStatus(`disconnected — retrying in ${Math.round(delay / 1000)} s`, "warn");
    if (reason) notice(`Live events interrupted: ${reason}. Retrying in ${Math.round(delay / 1000)} s.`, "error", "stream");
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(startStream, delay);
  }

  async function startStream() {
    stopStream();
    if (!state.token) return;
    const generation = state.streamGeneration;
    const controller = new AbortController();
    state.stream = { controller, generation };
    const current = () => generation === state.streamGeneration;
    setStatus("connecting", "idle");

    let openedAt = 0;
    let failure = null;
    try {
      const response = await fetch("v1/events", {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        credentials: "omit",
        signal: controller.signal,
      });
      if (!current()) return;
      if (response.status === 401) {
        const body = await readBody(response).catch(() => null);
        unauthorized(errorText(body, response));
        return;
      }
      if (!response.ok || !response.body) {
        const body = await readBody(response).catch(() => null);
        throw new Error(`HTTP ${response.status}: ${errorText(body, response)}`);
      }
      openedAt = Date.now();
      setStatus("connected", "ok");
      clearNotice("stream");
      refreshAll(); // catch up on anything missed while disconnected

      const reader = response.body.getReader();
      const decoder = new TextDecoder("utf-8");
      const feed = sseParser((type, data) => { if (current()) handleEvent(type, data); });
      for (;;) {
        const { value, done } = await reader.read();
        if (!current()) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        feed(decoder.decode(value, { stream: true }));
      }
      feed(decoder.decode());
      failure = "the server closed the stream";
    } catch (err) {
      if (!current() || (err && err.name === "AbortError")) return;
      failure = err && err.message ? err.message : String(err);
    }
    if (!current()) return;
    state.stream = null;
    if (openedAt && Date.now() - openedAt >= STABLE_STREAM_MS) state.backoffMs = BACKOFF_MIN_MS;
    scheduleReconnect(failure);
  }

  // ---------------------------------------------------------------- startup

  function connect(token) {
    setToken(token);
    hideTokenForm();
    clearNotice("auth");
    state.backoffMs = BACKOFF_MIN_MS;
    refreshAll();
    startStream();
  }

  function init() {
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      if (!token) { $("token").focus(); return; }
      $("token").value = "";
      connect(token);
    });
    $("change-token").addEventListener("click", () => {
      setToken(null);
      stopStream();
      setStatus("not connected", "idle");
      showTokenForm("");
    });
    $("refresh").addEventListener("click", () => {
      if (state.token) refreshAll();
      else showTokenForm("Enter the admin token first.");
    });
    $("reload").addEventListener("click", () => {
      if (state.token) reloadPlugins();
      else showTokenForm("Enter the admin token first.");
    });
    // A token pasted into the address bar later (e.g. `#token=...`) is picked up too.
    window.addEventListener("hashchange", () => {
      const token = readTokenFromFragment();
      if (token) connect(token);
    });

    setInterval(tick, 1_000);
    setInterval(() => { if (state.token) refreshAll(); }, FALLBACK_REFRESH_MS);

    renderSessions([], false);
    renderHeld([]);
    renderPlugins([]);

    const token = loadToken();
    if (token) connect(token);
    else {
      setStatus("not connected", "idle");
      showTokenForm("");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
