// keyledger admin: small helpers over the JSON API. No build step, nothing fetched from elsewhere.
"use strict";

// The session's CSRF token: every change made with the session cookie carries it.
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrfToken = csrfMeta ? csrfMeta.content : "";

async function api(method, path, body) {
  const headers = { "content-type": "application/json", "accept": "application/json" };
  if (csrfToken) headers["x-csrf-token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const detail = data && (data.detail || data.title) ? data.detail || data.title : response.statusText;
    const code = data && data.code ? ` (${data.code})` : "";
    throw new Error(`${detail}${code}`);
  }
  return data;
}

function show(element, text, kind) {
  element.textContent = text;
  element.className = `notice ${kind}`;
  element.hidden = false;
}

// Issue a license: the key is shown once, with a copy button and a warning.
const issueForm = document.getElementById("issue-form");
if (issueForm) {
  issueForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("issue-error");
    error.hidden = true;
    const form = new FormData(issueForm);
    const body = { owner: form.get("owner"), tier: form.get("tier") };
    const days = form.get("valid_days");
    if (form.get("perpetual")) body.perpetual = true;
    else if (days) body.valid_days = Number(days);
    try {
      const issued = await api("POST", "/v1/licenses", body);
      const panel = document.getElementById("issued");
      document.getElementById("issued-key").value = issued.key;
      const link = document.getElementById("issued-link");
      link.href = `/admin/licenses/${issued.license_id}?at=${issued.position}`;
      link.textContent = `${issued.key_prefix}… (${issued.owner})`;
      panel.hidden = false;
      document.getElementById("issued-key").focus();
      issueForm.reset();
    } catch (e) {
      show(error, `The license was not issued: ${e.message}`, "error");
    }
  });
}

const copy = document.getElementById("copy-key");
if (copy) {
  copy.addEventListener("click", async () => {
    const input = document.getElementById("issued-key");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (_) {
      input.select();
      document.execCommand("copy");
    }
    document.getElementById("copy-status").textContent = "Copied.";
  });
}

// License actions: revoke, suspend, reinstate, renew, each through a dialog asking the reason.
const dialog = document.getElementById("action-dialog");
if (dialog) {
  const form = dialog.querySelector("form");
  const title = document.getElementById("action-title");
  const reasonLabel = document.getElementById("action-reason-label");
  const daysLabel = document.getElementById("action-days-label");
  const error = document.getElementById("action-error");
  let current = null;
  document.querySelectorAll("[data-action]").forEach((button) => {
    button.addEventListener("click", () => {
      current = { action: button.dataset.action, license: button.dataset.license };
      title.textContent = button.dataset.title;
      reasonLabel.hidden = current.action === "renew";
      daysLabel.hidden = current.action !== "renew";
      error.hidden = true;
      form.reset();
      dialog.showModal();
    });
  });
  document.getElementById("action-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = current.action === "renew"
      ? { valid_days: Number(data.get("valid_days")) }
      : { reason: data.get("reason") };
    if (current.action === "reinstate" && !body.reason) delete body.reason;
    try {
      const result = await api("POST", `/v1/licenses/${current.license}/${current.action}`, body);
      window.location.href = `/admin/licenses/${current.license}?at=${result.position}`;
    } catch (e) {
      show(error, e.message, "error");
    }
  });
}

// Request viewer: a row expands to its bodies and links.
document.querySelectorAll("button[data-expand]").forEach((button) => {
  button.addEventListener("click", () => {
    const row = document.getElementById(button.dataset.expand);
    const open = button.getAttribute("aria-expanded") === "true";
    button.setAttribute("aria-expanded", String(!open));
    row.hidden = open;
  });
});

// Event log, live: new events at the top as they are committed (Server-Sent Events of
// /v1/events/stream, resumed by the browser with Last-Event-ID after a dropped connection).
const liveToggle = document.getElementById("live-toggle");
if (liveToggle) {
  const status = document.getElementById("live-status");
  const tbody = document.querySelector("#events tbody");
  let source = null;
  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };
  const row = (e) => {
    const tr = document.createElement("tr");
    tr.className = "live";
    tr.append(cell(String(e.position)), cell(e.event_type));
    const stream = document.createElement("td");
    stream.className = "wrap";
    const link = document.createElement("a");
    link.href = `/admin/events?stream_id=${encodeURIComponent(e.stream_id)}`;
    link.textContent = e.stream_id;
    stream.append(link);
    tr.append(stream, cell(String(e.version)), cell(e.recorded_at.replace("T", " ").slice(0, 19)));
    const json = document.createElement("td");
    json.className = "wrap";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "JSON";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(
      { data: e.data, metadata: e.metadata, event_id: e.event_id, hash: e.hash }, null, 2);
    details.append(summary, pre);
    json.append(details);
    tr.append(json);
    return tr;
  };
  const stop = () => {
    if (source) source.close();
    source = null;
    liveToggle.textContent = "Live";
    liveToggle.setAttribute("aria-pressed", "false");
    status.textContent = "";
  };
  liveToggle.addEventListener("click", () => {
    if (source) return stop();
    const { after, type, stream, correlation } = liveToggle.dataset;
    const params = new URLSearchParams({ after: after || "0" });
    if (type) params.set("type", type);
    source = new EventSource(`/v1/events/stream?${params}`, { withCredentials: true });
    source.onopen = () => { status.textContent = "Live: new events appear at the top."; };
    source.onerror = () => { status.textContent = "Reconnecting…"; };
    source.onmessage = (message) => {
      const e = JSON.parse(message.data);
      if (stream && e.stream_id !== stream) return;
      if (correlation && (!e.metadata || e.metadata.correlation_id !== correlation)) return;
      const empty = tbody.querySelector("td[colspan]");
      if (empty) empty.parentElement.remove();
      tbody.prepend(row(e));
    };
    liveToggle.textContent = "Stop live";
    liveToggle.setAttribute("aria-pressed", "true");
  });
}
