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
