// Annotator page, keyboard first: a class's key picks it, Enter submits, S skips.
//
// The queue's `next` gives the item to label and two prefetched ones; their images are fetched
// ahead so the next one appears at once. A submission is written to localStorage with its
// idempotency key before it is sent and removed only once the server stored it, so a reload or a
// dropped connection retries it (same key: the server stores it once) instead of losing it.
import { ApiError, api, clearError, showError } from "./api.js";

const cfg = JSON.parse(document.getElementById("label-config").textContent);
const PENDING_KEY = `crucible.label.pending.${cfg.user_id}`;
const HEARTBEAT_MS = 60_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;
const SMALL_IMAGE = 128; // at most this many pixels a side: scaled up without smoothing

const stage = document.getElementById("stage");
const img = document.getElementById("item-image");
const message = document.getElementById("stage-message");
const info = document.getElementById("item-info");
const errorBox = document.getElementById("label-error");
const pendingInfo = document.getElementById("pending-info");
const submitBtn = document.getElementById("submit-btn");
const skipBtn = document.getElementById("skip-btn");
const classButtons = [...document.querySelectorAll("#class-list .class-key")];
const todayEl = document.getElementById("today-count");
const sessionEl = document.getElementById("session-count");
const perMinuteEl = document.getElementById("per-minute");

const classKeys = new Map(cfg.classes.map((c) => [c.key, c.name]));
const skipKeyFree = !cfg.classes.some((c) => c.key.toLowerCase() === "s");

let leases = []; // held leases in order; the one shown is leases[0]
const images = new Map(); // lease id -> Promise of an object URL
const ready = new Map(); // lease id -> object URL, once fetched
const gone = new Set(); // items submitted or skipped on this page: never shown again
let current = null;
let displayed = false;
let shownAt = 0;
let selected = null;

const counted = new Set();
let todayCount = cfg.today_count;
let sessionCount = 0;
let sessionStart = null;

// ---- pending submissions (localStorage) ----

function loadPending() {
  try {
    const list = JSON.parse(localStorage.getItem(PENDING_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function savePending(list) {
  if (list.length) localStorage.setItem(PENDING_KEY, JSON.stringify(list));
  else localStorage.removeItem(PENDING_KEY);
}

function addPending(entry) {
  savePending([...loadPending(), entry]);
}

function removePending(key) {
  savePending(loadPending().filter((e) => e.key !== key));
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context (https or localhost); the same v4 UUID otherwise.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Network failures, server errors, throttling and an expired login may pass; other 4xx never will.
function retryable(err) {
  return [0, 401, 403, 408, 429].includes(err.status) || err.status >= 500;
}

let flushing = null;
let retryTimer = null;
let retryDelay = RETRY_MIN_MS;

function flush() {
  if (!flushing) flushing = sendPending().finally(() => (flushing = null));
  return flushing;
}

async function sendPending() {
  clearTimeout(retryTimer);
  retryTimer = null;
  for (const entry of loadPending()) {
    try {
      const annotation = await api(`/api/v1/labeling/items/${entry.item}/annotations/`, {
        method: "POST",
        json: { result: { label: entry.label }, time_spent_ms: entry.time_spent_ms, idempotency_key: entry.key },
      });
      removePending(entry.key);
      count(annotation);
      retryDelay = RETRY_MIN_MS;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (retryable(err)) {
        const waiting = loadPending().length;
        pendingInfo.textContent =
          `${waiting} label${waiting === 1 ? "" : "s"} waiting to be sent (${err.message.replace(/\.$/, "")}); ` +
          `retrying in ${Math.round(retryDelay / 1000)} s. They are kept if you reload.`;
        pendingInfo.hidden = false;
        retryTimer = setTimeout(flush, retryDelay);
        retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
        return false;
      }
      removePending(entry.key);
      showError(
        errorBox,
        new ApiError(err.status, err.code, `Your label "${entry.label}" for item ${entry.item} was not saved: ${err.message}`, err.fields),
      );
    }
  }
  pendingInfo.hidden = true;
  if (!current) enqueue(topUp); // was waiting for these before saying the queue is empty
  return true;
}

// ---- figures ----

function count(annotation) {
  // Annotations stored before the page was rendered are in today's count already.
  if (annotation.id <= cfg.today_last_id || counted.has(annotation.id)) return;
  counted.add(annotation.id);
  todayCount += 1;
  sessionCount += 1;
  showFigures();
}

function showFigures() {
  todayEl.textContent = todayCount;
  sessionEl.textContent = sessionCount;
  if (sessionCount && sessionStart) {
    const minutes = Math.max((Date.now() - sessionStart) / 60_000, 1 / 60);
    perMinuteEl.textContent = (sessionCount / minutes).toFixed(1);
  }
}

// ---- the queue ----

let chain = Promise.resolve();

// Queue calls run one after another, so two `next` calls never race.
function enqueue(fn) {
  chain = chain.then(fn).catch((err) => showError(errorBox, err));
  return chain;
}

function preload(lease) {
  const promise = fetch(lease.image_url, { credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      return response.blob();
    })
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      ready.set(lease.lease, url);
      return url;
    });
  promise.catch(() => {}); // reported when the item is shown
  images.set(lease.lease, promise);
}

function forget(lease) {
  const url = ready.get(lease.lease);
  if (url) URL.revokeObjectURL(url);
  ready.delete(lease.lease);
  images.delete(lease.lease);
}

async function topUp() {
  let data;
  try {
    data = await api(`/api/v1/projects/${cfg.project_id}/queue/next/`, { method: "POST" });
  } catch (err) {
    showError(errorBox, err);
    if (retryable(err)) setTimeout(() => enqueue(topUp), 5_000);
    if (!current) setStage("error", "The queue could not be loaded; trying again.");
    return;
  }
  const waiting = new Set(loadPending().map((e) => e.item));
  for (const lease of data.results) {
    if (gone.has(lease.item) || waiting.has(lease.item)) continue;
    if (leases.some((l) => l.lease === lease.lease)) continue;
    leases.push(lease);
    preload(lease);
  }
  if (!current && leases.length) show(leases[0]);
  else if (!current) showNothing();
}

function setStage(state, text, done = false) {
  stage.dataset.state = state;
  message.textContent = text;
  message.classList.toggle("done", done);
  message.hidden = false;
  img.hidden = true;
}

function showNothing() {
  delete stage.dataset.item;
  info.textContent = "";
  if (loadPending().length) setStage("waiting", "Sending your last labels…");
  else setStage("empty", `Nothing left to label in ${cfg.project}. Thanks!`, true);
}

function show(lease) {
  current = lease;
  displayed = false;
  select(null);
  submitBtn.disabled = skipBtn.disabled = !lease;
  if (!lease) {
    showNothing();
    return;
  }
  stage.dataset.item = lease.item;
  info.textContent = `item ${lease.item} · ${lease.width}×${lease.height}`;
  img.classList.toggle("pixelated", lease.width <= SMALL_IMAGE && lease.height <= SMALL_IMAGE);
  const url = ready.get(lease.lease);
  if (url) {
    display(url);
    return;
  }
  setStage("loading", "Loading the image…");
  images
    .get(lease.lease)
    .then((u) => current === lease && display(u))
    .catch((err) => {
      if (current !== lease) return;
      setStage("error", "This image could not be loaded.");
      showError(errorBox, new Error(`The image of item ${lease.item} could not be loaded (${err.message}). Skip it to go on.`));
    });
}

function display(url) {
  img.src = url;
  img.hidden = false;
  message.hidden = true;
  stage.dataset.state = "ready";
  displayed = true;
  shownAt = performance.now();
  if (!sessionStart) sessionStart = Date.now();
}

function advance() {
  const done = leases.shift();
  if (done) {
    gone.add(done.item);
    forget(done);
  }
  show(leases[0] || null);
}

// ---- actions ----

function select(name) {
  selected = name;
  for (const button of classButtons) button.classList.toggle("selected", button.dataset.name === name);
}

function submit() {
  if (!current || !displayed) return;
  if (selected === null) {
    showError(errorBox, new Error("Pick a class first: press its key."));
    return;
  }
  clearError(errorBox);
  addPending({
    key: newKey(),
    item: current.item,
    lease: current.lease,
    label: selected,
    time_spent_ms: Math.round(performance.now() - shownAt),
  });
  advance();
  enqueue(async () => {
    await flush();
    await topUp();
  });
}

function skip() {
  if (!current) return;
  clearError(errorBox);
  const lease = current;
  advance();
  enqueue(async () => {
    try {
      await api(`/api/v1/labeling/leases/${lease.lease}/release/`, { method: "POST" });
    } catch (err) {
      if (err.code !== "not_leased") showError(errorBox, err); // already released: nothing to undo
    }
    await topUp();
  });
}

async function heartbeat() {
  for (const lease of [...leases]) {
    try {
      await api(`/api/v1/labeling/leases/${lease.lease}/heartbeat/`, { method: "POST" });
    } catch (err) {
      if (err.code !== "not_leased") continue; // the next beat tries again
      const wasCurrent = lease === current;
      leases = leases.filter((l) => l !== lease);
      forget(lease);
      if (wasCurrent) {
        showError(errorBox, new Error(`Your hold on item ${lease.item} ran out; on to the next one.`));
        show(leases[0] || null);
      }
      enqueue(topUp);
    }
  }
}

function classFor(key) {
  if (classKeys.has(key)) return classKeys.get(key);
  for (const [k, name] of classKeys) if (k.toLowerCase() === key.toLowerCase()) return name;
  return undefined;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest && event.target.closest("input, textarea, select")) return;
  if (event.key === "Enter") {
    event.preventDefault(); // also keeps a focused button from submitting a second time
    submit();
    return;
  }
  const name = classFor(event.key);
  if (name !== undefined) {
    event.preventDefault();
    if (current) select(name);
    return;
  }
  if (skipKeyFree && event.key.toLowerCase() === "s") {
    event.preventDefault();
    skip();
  }
});

for (const button of classButtons) button.addEventListener("click", () => current && select(button.dataset.name));
submitBtn.addEventListener("click", submit);
skipBtn.addEventListener("click", skip);
setInterval(heartbeat, HEARTBEAT_MS);
setInterval(showFigures, 10_000);
window.addEventListener("online", flush);

showFigures();
enqueue(async () => {
  await flush();
  await topUp();
});
