// The admin hub in a real browser: Debian's Chromium, driven by playwright-core, against the
// real service (its binary, a fresh PostgreSQL database, no NATS). An admin user is created with
// the binary's `users create` before the service starts; the browser logs in as them, and the
// API calls of the tests use the bootstrap token. Screenshots of every page at 1280 px and
// 390 px land in artifacts/screenshots/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, openSync, readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const binary = process.env.KEYLEDGER_BIN || path.join(targetDir, "debug", "keyledger");
const shots = path.join(root, "artifacts", "screenshots");
const database = `kl_browser_${Date.now()}_${process.pid}`;
const databaseUrl = `postgres://postgres@127.0.0.1:5432/${database}`;
const logFile = path.join(root, "artifacts", `browser-service-${process.pid}.log`);
const adminToken = `browser-test-bootstrap-${process.pid}-0123456789abcdef`;
const admin = { email: "admin@example.com", password: "browser test password 42" };

let service;
let browser;
// A browser context logged in as the admin, shared by the tests.
let context;
let base;
const state = {};

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function until(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function api(method, urlPath, body) {
  const response = await fetch(`${base}${urlPath}`, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

async function screenshots(page, name) {
  for (const [label, width] of [["desktop", 1280], ["phone", 390]]) {
    await page.setViewportSize({ width, height: label === "phone" ? 844 : 900 });
    await page.screenshot({ path: path.join(shots, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

// Logs `page` in through the form; it lands on `next` (or the hub).
async function logIn(page, next) {
  await page.goto(`${base}/admin/login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
  await page.fill("#login-form input[name=email]", admin.email);
  await page.fill("#login-form input[name=password]", admin.password);
  await Promise.all([page.waitForURL((url) => !url.pathname.startsWith("/admin/login")),
                     page.click("#login-form button[type=submit]")]);
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const log = openSync(logFile, "w");
  const env = {
    ...process.env, DATABASE_URL: databaseUrl, BIND: `127.0.0.1:${port}`, RUST_LOG: "info",
    KEYLEDGER_ADMIN_TOKEN: adminToken,
    // The signing key lives outside the working tree.
    JWT_KEY_FILE: path.join(os.tmpdir(), "keyledger-browser-jwt.key"),
    SIGNING_KEY_FILE: path.join(os.tmpdir(), "keyledger-browser-signing.key"),
  };
  delete env.NATS_URL;
  // The first admin, as an operator creates one: the password on standard input.
  execFileSync(binary, ["users", "create", "--email", admin.email, "--role", "admin"], {
    env, input: `${admin.password}\n`, stdio: ["pipe", "ignore", log],
  });
  service = spawn(binary, ["serve"], {
    env,
    stdio: ["ignore", log, log],
  });
  await until("the service to be ready", async () => (await fetch(`${base}/health/ready`)).ok, 60000);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext();
  const page = await context.newPage();
  await logIn(page);
  await page.close();
});

after(async () => {
  await browser?.close();
  service?.kill("SIGKILL");
  try {
    execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c",
      `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`], { stdio: "ignore" });
  } catch (_) { /* best effort */ }
});

test("the hub shows a card per area", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  for (const card of ["#card-licenses", "#card-sessions", "#card-requests", "#card-lag"]) {
    assert.ok(await page.locator(card).isVisible(), card);
  }
  // Keyboard: the first Tab lands on the skip link.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await screenshots(page, "hub");
  await page.close();
});

test("the hub's API link opens the reference rendered from the OpenAPI description", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  await Promise.all([page.waitForURL((url) => url.pathname === "/admin/api"),
                     page.click("header nav a[href='/admin/api']")]);
  assert.equal(await page.locator("h1").textContent(), "API reference");
  const revoke = page.locator("#post_v1_licenses_id_revoke");
  assert.ok(await revoke.isVisible());
  assert.match(await revoke.textContent(), /BIZ_LICENSE_REVOKED/);
  // The schema a route names is a link to its description on the same page.
  await page.click("#post_v1_licenses a[href='#schema-IssueRequest']");
  assert.ok(await page.locator("#schema-IssueRequest").isVisible());
  await screenshots(page, "api-reference");
  await page.close();
});

test("an operator issues a license and reads its key once", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/admin/licenses`);
  await page.fill("#issue-form input[name=owner]", "Browser Test Ltd");
  await page.selectOption("#issue-form select[name=tier]", "pro");
  await page.click("#issue-form button[type=submit]");
  await page.waitForSelector("#issued:not([hidden])");
  const key = await page.inputValue("#issued-key");
  assert.match(key, /^lic_/);
  assert.match(await page.textContent("#issued"), /shown once/);
  await page.click("#copy-key");
  await page.waitForSelector("#copy-status:has-text('Copied')");
  state.key = key;
  state.href = await page.getAttribute("#issued-link", "href");
  state.licenseId = state.href.split("/")[3].split("?")[0];
  await screenshots(page, "licenses");

  // A bad request comes back in words.
  await page.fill("#issue-form input[name=owner]", "   ");
  await page.click("#issue-form button[type=submit]");
  await page.waitForSelector("#issue-error:not([hidden])");
  assert.match(await page.textContent("#issue-error"), /owner: must not be empty/);
  await page.close();
});

test("the validation shows in the license's usage and in the request viewer", async () => {
  const validation = await api("POST", "/v1/licenses/validate", { key: state.key, feature: "export" });
  assert.equal(validation.status, 200);
  assert.equal(validation.body.code, "VALID");

  const page = await context.newPage();
  await page.goto(`${base}/admin/licenses/${state.licenseId}?at=${validation.body.position}`);
  assert.match(await page.textContent("#usage"), /VALID/);
  assert.match(await page.textContent("#usage"), /export/);
  assert.ok(!(await page.content()).includes(state.key), "the key is not on the license page");
  await screenshots(page, "license-detail");

  const prefix = state.key.slice(0, 12);
  await until("the validation in the request viewer", async () => {
    await page.goto(`${base}/admin/requests?route=${encodeURIComponent("/v1/licenses/validate")}`);
    return (await page.locator("#requests tr.request-row").count()) > 0;
  });
  const row = page.locator("#requests tr.request-row").first();
  assert.match(await row.textContent(), new RegExp(prefix));
  await row.locator("button[data-expand]").click();
  const detail = page.locator("#requests tr.detail-row").first();
  assert.ok(await detail.isVisible());
  assert.match(await detail.textContent(), /\[REDACTED\]/);
  assert.ok(!(await page.content()).includes(state.key), "the key is not in the request viewer");
  await screenshots(page, "requests");
  await page.close();
});

test("an operator revokes the license from its page and validation sees it", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/admin/licenses/${state.licenseId}`);
  const beforeRevoke = new Date().toISOString();
  await page.click("button[data-action=revoke]");
  await page.waitForSelector("#action-dialog[open]");
  await page.fill("#action-dialog input[name=reason]", "refund requested");
  await page.click("#action-dialog button[type=submit]");
  await page.waitForURL(/\?at=\d+/);
  assert.match(await page.textContent("#license-status"), /revoked/);
  assert.match(await page.textContent("#history"), /LicenseRevoked/);
  assert.equal(await page.locator("button[data-action]").count(), 0, "a revoked license offers no action");
  const validation = await api("POST", "/v1/licenses/validate", { key: state.key });
  assert.equal(validation.body.code, "REVOKED");

  // The page shows the license as it stood before the revoke, and offers no action there.
  await page.fill("#as-of-form input[name=as_of]", beforeRevoke);
  await page.click("#as-of-form button[type=submit]");
  await page.waitForURL(/as_of=/);
  assert.match(await page.textContent("#license-status"), /active/);
  assert.match(await page.textContent("#as-of-note"), /as it stood at/);
  assert.doesNotMatch(await page.textContent("#history"), /LicenseRevoked/, "history stops at the instant");
  assert.equal(await page.locator("button[data-action]").count(), 0, "a past state offers no action");
  await screenshots(page, "license-as-of");
  await page.close();
});

test("the request viewer filtered to 4xx shows only 4xx rows", async () => {
  assert.equal((await api("GET", "/v1/licenses/not-a-uuid")).status, 400);
  assert.equal((await api("POST", "/v1/licenses", { owner: "x", tier: "gold" })).status, 422);
  const page = await context.newPage();
  await until("4xx records", async () => {
    await page.goto(`${base}/admin/requests`);
    await page.selectOption("#status-class", "4xx");
    await Promise.all([page.waitForURL(/status_class=4xx/), page.click("form.filters button[type=submit]")]);
    return (await page.locator("#requests tr.request-row").count()) >= 2;
  });
  const statuses = await page.locator("#requests tr.request-row").evaluateAll(
    (rows) => rows.map((r) => Number(r.dataset.status)));
  assert.ok(statuses.length >= 2);
  assert.ok(statuses.every((s) => s >= 400 && s < 500), `${statuses}`);
  await page.close();
});

test("sessions and events pages list what happened", async () => {
  const created = await api("POST", "/v1/sessions", { agent_role: "reviewer" });
  assert.equal(created.status, 201);
  const moved = await api("POST", `/v1/sessions/${created.body.session_id}/transition`, { to: "active", reason: "picked up" });
  assert.equal(moved.status, 200);
  const page = await context.newPage();
  await until("the active session", async () => {
    await page.goto(`${base}/admin/sessions?status=active`);
    return (await page.locator("#sessions tbody tr a").count()) > 0;
  });
  assert.equal(await page.textContent(".count-value[data-status=active]"), "1");
  await screenshots(page, "sessions");
  await page.click("#sessions tbody tr a");
  assert.match(await page.textContent("#transitions"), /picked up/);
  await screenshots(page, "session-detail");

  await page.goto(`${base}/admin/events?event_type=LicenseRevoked`);
  const rows = page.locator("#events tbody tr");
  assert.equal(await rows.count(), 1);
  await rows.first().locator("summary").click();
  assert.match(await rows.first().textContent(), /refund requested/);
  await screenshots(page, "events");
  assert.ok(!(await page.content()).includes(state.key));
  await page.close();

  const log = readFileSync(logFile, "utf8");
  assert.ok(log.includes("keyledger is serving"));
  assert.ok(!log.includes(state.key), "the key is not in the service's log");
});

test("the event log in live mode shows a new event at the top as it is committed", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/admin/events?event_type=LicenseIssued`);
  const newest = Number(await page.locator("#events tbody tr td").first().textContent());
  await page.click("#live-toggle");
  await page.waitForSelector("#live-status:has-text('Live')");
  const issued = await api("POST", "/v1/licenses", { owner: "Live Ltd", tier: "basic" });
  assert.equal(issued.status, 201);
  await page.waitForSelector("#events tbody tr.live");
  const top = page.locator("#events tbody tr").first();
  assert.match(await top.textContent(), /LicenseIssued/);
  assert.match(await top.textContent(), new RegExp(issued.body.license_id));
  assert.ok(Number(await top.locator("td").first().textContent()) > newest);
  assert.equal(await page.locator("#events tbody tr.live").count(), 1, "only the filter's events arrive");
  await screenshots(page, "events-live");
  await page.click("#live-toggle");
  assert.equal(await page.getAttribute("#live-toggle", "aria-pressed"), "false");
  await page.close();
});

test("an admin logs in, issues a license, and logs out; a change without the CSRF token is refused", async () => {
  const own = await browser.newContext();
  const page = await own.newPage();
  await page.goto(`${base}/admin/licenses`);
  assert.match(page.url(), /\/admin\/login\?next=%2Fadmin%2Flicenses$/);

  // A wrong password: the form again, with an error that does not say which part was wrong.
  await page.fill("#login-form input[name=email]", admin.email);
  await page.fill("#login-form input[name=password]", "not the password");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#login-error");
  assert.match(await page.textContent("#login-error"), /email or the password is wrong/);
  await screenshots(page, "login");

  await page.fill("#login-form input[name=password]", admin.password);
  await Promise.all([page.waitForURL(`${base}/admin/licenses`), page.click("#login-form button[type=submit]")]);
  assert.equal(await page.textContent("#who-name"), admin.email);
  assert.equal(await page.textContent("#who-role"), "admin");
  const cookies = await own.cookies();
  const session = cookies.find((c) => c.name === "kl_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(cookies));

  await page.fill("#issue-form input[name=owner]", "Login Test Ltd");
  await page.click("#issue-form button[type=submit]");
  await page.waitForSelector("#issued:not([hidden])");
  assert.match(await page.inputValue("#issued-key"), /^lic_/);

  // The page's script may not be the only one to send requests with the cookie: one without
  // the CSRF token is refused and writes nothing.
  const refused = await page.evaluate(async () => {
    const response = await fetch("/v1/licenses", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ owner: "Forged Ltd", tier: "pro" }),
    });
    return { status: response.status, body: await response.json() };
  });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.code, "AUTH_CSRF_FAILED");
  const forged = await api("GET", `/v1/licenses?owner=${encodeURIComponent("Forged Ltd")}`);
  assert.equal(forged.status, 200);
  assert.equal(forged.body.items.length, 0, JSON.stringify(forged.body));

  await Promise.all([page.waitForURL(/\/admin\/login$/), page.click("#logout-form button[type=submit]")]);
  await page.goto(`${base}/admin`);
  assert.match(page.url(), /\/admin\/login/, "the session has ended");
  await own.close();
});
