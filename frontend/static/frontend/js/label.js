// Annotator page, keyboard first. Single label: a class's key picks it; multi-label: class keys
// toggle classes; boxes: drag on the image to draw, class keys choose the class of new (and of the
// selected) box, Delete removes the selected box. Enter submits, S skips, Z undoes the last submission.
//
// The queue's `next` gives the item to label and two prefetched ones; their images are fetched
// ahead so the next one appears at once. A submission is written to localStorage with its
// idempotency key before it is sent and removed only once the server stored it, so a reload or a
// dropped connection retries it (same key: the server stores it once) instead of losing it.
import { ApiError, api, clearError, h, showError } from "./api.js";
import { BoxEditor } from "./label-boxes.js";

const cfg = JSON.parse(document.getElementById("label-config").textContent);
const PENDING_KEY = `crucible.label.pending.${cfg.user_id}`;
const HEARTBEAT_MS = 60_000;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;
const SMALL_IMAGE = 128; // at most this many pixels a side: scaled up without smoothing
const UNDO_DEPTH = 20;
const $ = (id) => document.getElementById(id);

const stage = $("stage");
const img = $("item-image");
const textEl = $("item-text");
const layer = $("box-layer");
const message = $("stage-message");
const pausedBox = $("paused-box");
const info = $("item-info");
const chips = $("chips");
const errorBox = $("label-error");
const noteEl = $("label-note");
const pendingInfo = $("pending-info");
const submitBtn = $("submit-btn");
const skipBtn = $("skip-btn");
const undoBtn = $("undo-btn");
const returnedBtn = $("returned-btn");
const reviewNote = $("review-note");
const classButtons = [...document.querySelectorAll("#class-list .class-key")];

const kind = cfg.kind;
const classKeys = new Map(cfg.classes.map((c) => [c.key, c.name]));
const classNames = cfg.classes.map((c) => c.name);
const keyFree = (k) => !cfg.classes.some((c) => c.key.toLowerCase() === k);
const skipKeyFree = keyFree("s");
const undoKeyFree = keyFree("z");

// A task is what is on screen: a leased queue item, or a returned annotation to revise.
let leases = []; // queue tasks held, in order; the one shown in the queue is leases[0]
let returned = []; // returned tasks still to revise, while revising them
let mode = "queue"; // or "returned"
const images = new Map(); // task key -> Promise of an object URL
const ready = new Map(); // task key -> object URL, once fetched
const gone = new Set(); // items submitted or skipped on this page: never shown again
const history = []; // this page's submissions, newest last: what Z takes back
let current = null;
let displayed = false;
let shownAt = 0;
let paused = false;

// The answer being given.
let selected = null; // single_label: the class picked
let chosen = new Set(); // multi_label: the classes on
const editor = new BoxEditor(layer, { classIndex: (name) => classNames.indexOf(name), onChange: showAnswer });
editor.currentClass = classNames[0] || null;

const counted = new Set();
let todayCount = cfg.today_count;
let sessionCount = 0;
let sessionStart = null;
let sinceFigures = 0;

function taskFromLease(lease) {
  return {
    key: `l${lease.lease}`,
    lease: lease.lease,
    item: lease.item,
    kind: lease.kind || "image",
    text: lease.text,
    width: lease.width,
    height: lease.height,
    image_url: lease.image_url,
    prefill: null,
  };
}

function taskFromReturned(row) {
  const url = row.image_url && !row.image_url.startsWith("/") ? `/api/v1/${row.image_url}` : row.image_url;
  return {
    key: `a${row.annotation}`,
    annotation: row.annotation,
    item: row.item,
    kind: row.kind || "image",
    text: row.text,
    width: row.width,
    height: row.height,
    image_url: url,
    prefill: row.result,
    comment: row.comment,
    reviewer: row.reviewer,
    reviseKey: newKey(),
  };
}

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
  return err.code !== "annotator_paused" && ([0, 401, 403, 408, 429].includes(err.status) || err.status >= 500);
}

function describe(result) {
  if (!result) return "";
  if (result.label !== undefined) return `"${result.label}"`;
  if (result.labels) return result.labels.length ? result.labels.join(", ") : "no class";
  if (result.boxes) return `${result.boxes.length} box${result.boxes.length === 1 ? "" : "es"}`;
  return JSON.stringify(result);
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
    const result = entry.result || { label: entry.label }; // entries kept by an older page
    try {
      const annotation = await api(`/api/v1/labeling/items/${entry.item}/annotations/`, {
        method: "POST",
        json: { result, time_spent_ms: entry.time_spent_ms, idempotency_key: entry.key },
      });
      removePending(entry.key);
      const done = history.find((h) => h.key === entry.key);
      if (done) done.annotation = annotation.id;
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
        new ApiError(err.status, err.code, `Your label ${describe(result)} for item ${entry.item} was not saved: ${err.message}`, err.fields),
      );
    }
  }
  pendingInfo.hidden = true;
  if (!current && mode === "queue" && !paused) enqueue(topUp); // was waiting for these before saying the queue is empty
  return true;
}

// ---- figures ----

function count(annotation) {
  // Annotations stored before the page was rendered are in today's count already.
  if (annotation.id <= cfg.today_last_id || counted.has(annotation.id)) return;
  counted.add(annotation.id);
  todayCount += 1;
  sessionCount += 1;
  sinceFigures += 1;
  showFigures();
  if (sinceFigures >= cfg.figures_every) enqueue(refreshFigures);
}

function uncount(annotationId) {
  todayCount = Math.max(0, todayCount - 1);
  if (counted.delete(annotationId)) sessionCount -= 1;
  showFigures();
}

function showFigures() {
  $("today-count").textContent = todayCount;
  $("session-count").textContent = sessionCount;
  if (sessionCount && sessionStart) {
    const minutes = Math.max((Date.now() - sessionStart) / 60_000, 1 / 60);
    $("per-minute").textContent = (sessionCount / minutes).toFixed(1);
  }
}

// The server's figures for today: the count, the pace, gold accuracy and returned work.
async function refreshFigures() {
  sinceFigures = 0;
  let me;
  try {
    me = await api(`/api/v1/projects/${cfg.project_id}/me/`);
  } catch (err) {
    console.warn("figures not refreshed:", err.message); // the page's own counts stay on screen
    return;
  }
  todayCount = me.today;
  showFigures();
  $("per-hour").textContent = me.per_hour ? Math.round(me.per_hour) : "—";
  const gold = me.gold || {};
  $("gold-accuracy").textContent =
    gold.accuracy === null || gold.accuracy === undefined ? "—" : `${Math.round(gold.accuracy * 100)}% (${gold.answered})`;
  returnedBtn.dataset.count = me.returned || 0;
  showReturnedBanner();
}

function showReturnedBanner() {
  const n = Number(returnedBtn.dataset.count || 0);
  returnedBtn.textContent = `${n} returned by review`;
  returnedBtn.hidden = !(n > 0 && mode === "queue");
}

// ---- the queue ----

let chain = Promise.resolve();

// Queue calls run one after another, so two `next` calls never race.
function enqueue(fn) {
  chain = chain.then(fn).catch((err) => showError(errorBox, err));
  return chain;
}

function preload(task) {
  if (task.kind === "text" || images.has(task.key)) return;
  const promise = fetch(task.image_url, { credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      return response.blob();
    })
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      ready.set(task.key, url);
      return url;
    });
  promise.catch(() => {}); // reported when the item is shown
  images.set(task.key, promise);
}

function forget(task) {
  const url = ready.get(task.key);
  if (url) URL.revokeObjectURL(url);
  ready.delete(task.key);
  images.delete(task.key);
}

async function topUp() {
  if (paused) return;
  let data;
  try {
    data = await api(`/api/v1/projects/${cfg.project_id}/queue/next/`, { method: "POST" });
  } catch (err) {
    if (err.code === "annotator_paused") {
      showPaused(err.message);
      return;
    }
    showError(errorBox, err);
    if (retryable(err)) setTimeout(() => enqueue(topUp), 5_000);
    if (!current && mode === "queue") setStage("error", "The queue could not be loaded; trying again.");
    return;
  }
  const waiting = new Set(loadPending().map((e) => e.item));
  for (const lease of data.results) {
    if (gone.has(lease.item) || waiting.has(lease.item)) continue;
    if (leases.some((t) => t.lease === lease.lease || t.item === lease.item)) continue;
    const task = taskFromLease(lease);
    leases.push(task);
    preload(task);
  }
  if (mode !== "queue") return;
  if (!current && leases.length) show(leases[0]);
  else if (!current) showNothing();
}

function showPaused(reason) {
  paused = true;
  $("paused-reason").textContent = reason || "An engineer of the project paused your labelling.";
  for (const task of leases) forget(task);
  leases = [];
  if (mode !== "queue") return; // returned work may go on; the queue says so when it is back
  show(null);
}

function checkAgain() {
  const button = $("check-again");
  button.disabled = true;
  paused = false;
  enqueue(async () => {
    await topUp();
    button.disabled = false;
    if (paused) note("Still paused.");
  });
}

function setStage(state, text, done = false) {
  stage.dataset.state = state;
  message.textContent = text;
  message.classList.toggle("done", done);
  message.hidden = false;
  img.hidden = textEl.hidden = layer.hidden = true;
}

function showNothing() {
  delete stage.dataset.item;
  info.textContent = "";
  pausedBox.hidden = !paused;
  if (paused) setStage("paused", "Your labelling is paused.");
  else if (loadPending().length) setStage("waiting", "Sending your last labels…");
  else setStage("empty", `Nothing left to label in ${cfg.project}. Thanks!`, true);
}

function show(task) {
  current = task;
  displayed = false;
  setAnswer(task && task.prefill);
  submitBtn.disabled = !task;
  skipBtn.disabled = !task || mode !== "queue";
  undoBtn.hidden = mode !== "queue"; // revisions are not taken back
  reviewNote.hidden = !task || !task.annotation;
  if (!task) {
    showNothing();
    return;
  }
  pausedBox.hidden = true;
  stage.dataset.item = task.item;
  stage.dataset.kind = task.kind;
  if (task.annotation) {
    $("review-comment").textContent = task.comment || "(no comment)";
    $("review-who").textContent = task.reviewer ? `Returned by ${task.reviewer}` : "Returned by review";
  }
  if (task.kind === "text") {
    info.textContent = `item ${task.item} · text`;
    textEl.textContent = task.text || "";
    reveal(textEl);
    if (kind === "boxes") showError(errorBox, new Error("A text item takes no boxes; skip it."));
    return;
  }
  info.textContent = `item ${task.item} · ${task.width}×${task.height}`;
  img.classList.toggle("pixelated", task.width <= SMALL_IMAGE && task.height <= SMALL_IMAGE);
  const url = ready.get(task.key);
  if (url) {
    display(url);
    return;
  }
  setStage("loading", "Loading the image…");
  preload(task);
  images
    .get(task.key)
    .then((u) => current === task && display(u))
    .catch((err) => {
      if (current !== task) return;
      setStage("error", "This image could not be loaded.");
      showError(errorBox, new Error(`The image of item ${task.item} could not be loaded (${err.message}). Skip it to go on.`));
    });
}

function display(url) {
  img.src = url;
  reveal(img);
  if (kind === "boxes") {
    layer.hidden = false;
    editor.layout(stage);
  }
}

function reveal(el) {
  img.hidden = textEl.hidden = layer.hidden = true;
  el.hidden = false;
  message.hidden = true;
  stage.dataset.state = "ready";
  displayed = true;
  shownAt = performance.now();
  if (!sessionStart) sessionStart = Date.now();
}

function advance() {
  const list = mode === "queue" ? leases : returned;
  const done = list.shift();
  if (done) {
    if (mode === "queue") gone.add(done.item);
    forget(done);
  }
  show(list[0] || null);
}

// ---- the answer ----

function setAnswer(prefill) {
  selected = prefill && prefill.label !== undefined ? prefill.label : null;
  chosen = new Set((prefill && prefill.labels) || []);
  if (kind === "boxes" && current) editor.load(current.width, current.height, (prefill && prefill.boxes) || []);
  showAnswer();
}

function pick(name) {
  if (kind === "multi_label") {
    if (chosen.has(name)) chosen.delete(name);
    else chosen.add(name);
  } else if (kind === "boxes") {
    editor.currentClass = name;
    editor.relabelSelected(name);
  } else {
    selected = name;
  }
  showAnswer();
}

function showAnswer() {
  const on = { multi_label: (n) => chosen.has(n), boxes: (n) => editor.currentClass === n }[kind] || ((n) => selected === n);
  for (const button of classButtons) button.classList.toggle("selected", on(button.dataset.name));
  if (kind === "multi_label") {
    const names = classNames.filter((n) => chosen.has(n));
    chips.replaceChildren(...names.map((n) => h("span", { class: "chip" }, n)));
    if (!names.length) chips.append(h("span", { class: "muted small" }, "no class: Enter submits none"));
  } else if (kind === "boxes") {
    const n = editor.boxes.length;
    const hint = editor.selected >= 0 ? " · one selected: Delete removes it" : "";
    chips.textContent = `${n} box${n === 1 ? "" : "es"}${hint}`;
  }
}

function answer() {
  if (current.kind === "text" && kind === "boxes") return null;
  if (kind === "multi_label") return { labels: classNames.filter((n) => chosen.has(n)) };
  if (kind === "boxes") return { boxes: editor.result() };
  return selected === null ? null : { label: selected };
}

// ---- actions ----

function note(text) {
  noteEl.textContent = text;
  noteEl.hidden = false;
  clearTimeout(note.timer);
  note.timer = setTimeout(() => (noteEl.hidden = true), 6_000);
}

function submit() {
  if (!current || !displayed || editor.busy()) return;
  const result = answer();
  if (result === null) {
    const noBoxes = current.kind === "text" && kind === "boxes";
    const why = noBoxes ? "A text item takes no boxes; skip it." : "Pick a class first: press its key.";
    showError(errorBox, new Error(why));
    return;
  }
  clearError(errorBox);
  const time_spent_ms = Math.round(performance.now() - shownAt);
  if (current.annotation) {
    revise(current, result, time_spent_ms);
    return;
  }
  const entry = { key: newKey(), item: current.item, lease: current.lease, result, time_spent_ms };
  addPending(entry);
  history.push({ key: entry.key, task: { ...current }, result, annotation: null });
  if (history.length > UNDO_DEPTH) history.shift();
  advance();
  enqueue(async () => {
    await flush();
    await topUp();
  });
}

function skip() {
  if (!current || mode !== "queue") return;
  clearError(errorBox);
  const task = current;
  advance();
  enqueue(async () => {
    try {
      await api(`/api/v1/labeling/leases/${task.lease}/release/`, { method: "POST" });
    } catch (err) {
      if (err.code !== "not_leased") showError(errorBox, err); // already released: nothing to undo
    }
    await topUp();
  });
}

// Z: the last submission comes back on screen with its answer. One still waiting to be sent is
// taken back here; one the server stored is withdrawn there while its lease would still live.
function undo() {
  if (mode !== "queue") return;
  const last = history.pop();
  if (!last) {
    note("Nothing to undo.");
    return;
  }
  clearError(errorBox);
  enqueue(async () => {
    if (flushing) await flushing; // its answer tells whether the server has it
    if (loadPending().some((e) => e.key === last.key)) {
      removePending(last.key);
      bringBack(last.task, last.result);
      return;
    }
    if (!last.annotation) return; // refused by the server: the error is on screen already
    try {
      const data = await api(`/api/v1/labeling/annotations/${last.annotation}/undo/`, { method: "POST" });
      uncount(last.annotation);
      bringBack(taskFromLease(data.lease), last.result);
    } catch (err) {
      if (err.status === 409) note(`Too late to undo item ${last.task.item} (${err.message.replace(/\.$/, "")}).`);
      else showError(errorBox, err);
    }
  });
}

function bringBack(task, result) {
  gone.delete(task.item);
  leases = leases.filter((t) => t.item !== task.item);
  task.prefill = result;
  leases.unshift(task);
  if (paused) return;
  if (mode === "queue") show(task);
  note(`Item ${task.item} is back: change the answer and submit again.`);
}

// ---- returned work ----

async function openReturned() {
  clearError(errorBox);
  let data;
  try {
    data = await api(`/api/v1/projects/${cfg.project_id}/returned/`);
  } catch (err) {
    showError(errorBox, err);
    return;
  }
  returned = data.results.map(taskFromReturned);
  returnedBtn.dataset.count = returned.length;
  if (!returned.length) {
    showReturnedBanner();
    note("Nothing is waiting for a revision any more.");
    return;
  }
  mode = "returned";
  showReturnedBanner();
  $("revise-bar").hidden = false;
  returned.forEach(preload);
  show(returned[0]);
}

async function revise(task, result, time_spent_ms) {
  submitBtn.disabled = true;
  try {
    const annotation = await api(`/api/v1/labeling/annotations/${task.annotation}/revise/`, {
      method: "POST",
      json: { result, time_spent_ms, idempotency_key: task.reviseKey },
    });
    count(annotation);
  } catch (err) {
    submitBtn.disabled = false;
    showError(errorBox, err);
    return;
  }
  returnedBtn.dataset.count = Math.max(0, Number(returnedBtn.dataset.count) - 1);
  note(`Revision of item ${task.item} sent.`);
  advance();
  if (!current) leaveReturned();
}

function leaveReturned() {
  for (const task of returned) forget(task);
  returned = [];
  mode = "queue";
  $("revise-bar").hidden = true;
  showReturnedBanner();
  show(leases[0] || null);
  if (!current) enqueue(topUp);
  enqueue(refreshFigures);
}

async function heartbeat() {
  for (const task of [...leases]) {
    try {
      await api(`/api/v1/labeling/leases/${task.lease}/heartbeat/`, { method: "POST" });
    } catch (err) {
      if (err.code !== "not_leased") continue; // the next beat tries again
      const wasCurrent = task === current;
      leases = leases.filter((t) => t !== task);
      forget(task);
      if (wasCurrent) {
        showError(errorBox, new Error(`Your hold on item ${task.item} ran out; on to the next one.`));
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
  if (kind === "boxes" && (event.key === "Delete" || event.key === "Backspace")) {
    event.preventDefault();
    editor.removeSelected();
    return;
  }
  const name = classFor(event.key);
  if (name !== undefined) {
    event.preventDefault();
    if (current) pick(name);
    return;
  }
  if (skipKeyFree && event.key.toLowerCase() === "s") {
    event.preventDefault();
    skip();
  } else if (undoKeyFree && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  }
});

for (const button of classButtons) button.addEventListener("click", () => current && pick(button.dataset.name));
submitBtn.addEventListener("click", submit);
skipBtn.addEventListener("click", skip);
undoBtn.addEventListener("click", undo);
returnedBtn.addEventListener("click", openReturned);
$("revise-exit").addEventListener("click", leaveReturned);
$("check-again").addEventListener("click", checkAgain);
window.addEventListener("resize", () => kind === "boxes" && displayed && editor.layout(stage));
setInterval(heartbeat, HEARTBEAT_MS);
setInterval(showFigures, 10_000);
window.addEventListener("online", flush);

showFigures();
enqueue(async () => {
  await flush();
  await topUp();
  await refreshFigures();
});
