// Review page: the project's open review tasks one at a time. A sampled submission is accepted (A),
// rejected with a comment for its annotator (R) or fixed (F); a disagreement shows every vote, the one
// looked at (its number key) is kept with A, or the item is fixed. N moves on without deciding.
// Everything is read and decided through the REST API (docs/api.md, "Review").
import { api, clearError, h, showError } from "./api.js";

const config = JSON.parse(document.getElementById("review-config").textContent);
const KIND = config.kind;
const CLASSES = config.classes;
const PALETTE = ["#f0a33a", "#3fb5e8", "#e0509a", "#5cc460", "#a77de8", "#e8d43f", "#ef6b5b", "#4fd1c0"];
const SVG = "http://www.w3.org/2000/svg";
const PAGE = 50;

const el = (id) => document.getElementById(id);
const stage = {
  frame: el("review-frame"),
  image: el("review-image"),
  boxes: el("review-boxes"),
  text: el("review-text"),
  message: el("review-message"),
};
const buttons = {
  accept: el("accept-btn"),
  reject: el("reject-btn"),
  fix: el("fix-btn"),
  save: el("fix-save"),
  next: el("next-btn"),
};
const errorBox = el("review-error");
const note = el("review-note");
const rejectForm = el("reject-form");
const rejectComment = el("reject-comment");

const state = {
  tasks: [], // loaded open reviews not decided here yet, in the order shown
  index: 0,
  after: 0, // keyset position of the next page
  more: true,
  vote: 0, // the vote looked at, for disagreements
  mode: "view", // view | reject | fix
  fix: null, // the result being fixed
  selectedBox: -1,
  busy: false,
  counts: { ...config.counts },
  session: 0,
};

function colorOf(name) {
  const i = CLASSES.findIndex((c) => c.name === name);
  return PALETTE[(i < 0 ? CLASSES.length : i) % PALETTE.length];
}

function current() {
  return state.tasks[state.index] || null;
}

// The result on screen: the sampled annotation, or the disagreement's vote looked at.
function shownResult(task) {
  if (task.annotation) return task.annotation.result;
  const vote = task.votes[state.vote];
  return vote ? vote.result : null;
}

function chipsOf(result) {
  if (!result) return [h("span", { class: "muted" }, "no answer")];
  if (Array.isArray(result.boxes)) {
    if (!result.boxes.length) return [h("span", { class: "muted" }, "no boxes (nothing to box)")];
    const counts = {};
    for (const b of result.boxes) counts[b.label] = (counts[b.label] || 0) + 1;
    return Object.entries(counts).map(([name, n]) => h("span", { class: "chip", style: `background:${colorOf(name)}` }, `${name} × ${n}`));
  }
  if (Array.isArray(result.labels)) {
    if (!result.labels.length) return [h("span", { class: "muted" }, "no class")];
    return result.labels.map((name) => h("span", { class: "chip" }, name));
  }
  return [h("span", { class: "chip" }, result.label ?? "?")];
}

function drawBoxes(task, result, selected = -1) {
  stage.boxes.replaceChildren();
  const boxes = result && Array.isArray(result.boxes) ? result.boxes : [];
  if (!task.width || !task.height) return;
  stage.boxes.setAttribute("viewBox", `0 0 ${task.width} ${task.height}`);
  // Tags about 12 screen pixels high whatever the zoom: the image is drawn scaled to fit the stage.
  const shown = stage.frame.getBoundingClientRect();
  const scale = Math.min(shown.width / task.width, shown.height / task.height) || 1;
  const font = 12 / scale;
  boxes.forEach((b, i) => {
    const color = colorOf(b.label);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", `review-box${i === selected ? " selected" : ""}`);
    g.dataset.index = String(i);
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x: b.x, y: b.y, width: b.w, height: b.h })) rect.setAttribute(k, v);
    rect.setAttribute("stroke", color);
    rect.setAttribute("fill", color);
    const tag = document.createElementNS(SVG, "text");
    tag.setAttribute("x", b.x + font * 0.25);
    tag.setAttribute("y", b.y + font * 1.05);
    tag.setAttribute("font-size", font);
    tag.setAttribute("fill", "#fff");
    tag.setAttribute("stroke", color);
    tag.textContent = b.label;
    g.append(rect, tag);
    stage.boxes.append(g);
  });
}

function showCounts() {
  for (const key of ["open", "accepted", "rejected", "fixed"]) el(`count-${key}`).textContent = String(state.counts[key]);
  el("count-session").textContent = String(state.session);
}

function setButtons() {
  const task = current();
  const idle = task && !state.busy && state.mode === "view";
  buttons.accept.disabled = !idle || (!task.annotation && !task.votes.length);
  buttons.reject.disabled = !idle || task.reason !== "sample";
  buttons.fix.disabled = !idle;
  buttons.next.disabled = !idle || state.tasks.length < 2;
  buttons.save.hidden = state.mode !== "fix";
  buttons.save.disabled = state.busy;
  for (const b of document.querySelectorAll("#class-list .class-key")) {
    b.disabled = state.mode !== "fix";
    b.classList.toggle("selected", state.mode === "fix" && fixHas(b.dataset.name));
  }
}

function fixHas(name) {
  const r = state.fix;
  if (!r) return false;
  if (KIND === "multi_label") return r.labels.includes(name);
  if (KIND === "boxes") return state.selectedBox >= 0 && r.boxes[state.selectedBox]?.label === name;
  return r.label === name;
}

function render() {
  const task = current();
  el("review-position").textContent = task ? `${state.index + 1} of ${state.tasks.length} loaded` : "";
  showCounts();
  rejectForm.hidden = state.mode !== "reject";
  el("fix-bar").hidden = state.mode !== "fix";
  if (!task) {
    stage.frame.hidden = true;
    stage.text.hidden = true;
    stage.message.hidden = false;
    stage.message.textContent = "No open reviews left. Well done.";
    stage.message.classList.add("done");
    el("review-reason").hidden = true;
    el("review-annotator").textContent = "";
    el("review-chips").replaceChildren();
    el("review-votes").hidden = true;
    setButtons();
    return;
  }
  stage.message.hidden = true;
  const reason = el("review-reason");
  reason.hidden = false;
  reason.textContent = task.reason === "disagreement" ? "disagreement" : "sampled";
  reason.className = `tag tag-${task.reason}`;
  el("review-annotator").textContent = task.annotation
    ? `by ${task.annotation.annotator_name}`
    : `${task.votes.length} votes, no majority`;
  const result = state.mode === "fix" ? state.fix : shownResult(task);
  if (task.kind === "text") {
    stage.frame.hidden = true;
    stage.text.hidden = false;
    stage.text.textContent = task.text ?? "";
  } else {
    stage.text.hidden = true;
    stage.frame.hidden = false;
    const url = task.image_url.startsWith("/") ? task.image_url : `/api/v1/${task.image_url}`;
    if (stage.image.dataset.src !== url) {
      stage.image.dataset.src = url;
      stage.image.src = url;
    }
    stage.image.classList.toggle("pixelated", Math.max(task.width, task.height) <= 128);
    drawBoxes(task, result, state.mode === "fix" ? state.selectedBox : -1);
  }
  el("review-answer-label").textContent = state.mode === "fix" ? "Fixed answer" : task.annotation ? "Answer" : "Vote shown";
  el("review-chips").replaceChildren(...chipsOf(result));
  const votes = el("review-votes");
  votes.hidden = !task.votes.length || (task.reason === "sample" && task.votes.length < 2);
  el("votes-list").replaceChildren(
    ...task.votes.map((v, i) =>
      h(
        "li",
        { class: task.reason === "disagreement" && i === state.vote ? "vote shown" : "vote", "data-vote": i },
        task.reason === "disagreement" && i < 9 ? h("kbd", {}, String(i + 1)) : null,
        " ",
        h("strong", {}, v.annotator_name),
        " ",
        ...chipsOf(v.result),
      ),
    ),
  );
  if (state.mode === "fix") {
    el("fix-help").textContent =
      KIND === "multi_label"
        ? "switch classes on or off with their keys; Enter saves, Esc cancels."
        : KIND === "boxes"
          ? "Tab selects a box, a class's key changes its class, Delete removes it; Enter saves, Esc cancels."
          : "pick the class with its key; Enter saves, Esc cancels.";
    el("fix-chips").replaceChildren(...chipsOf(state.fix));
  }
  setButtons();
}

async function loadMore() {
  if (!state.more) return;
  const data = await api(`/api/v1/projects/${config.project_id}/reviews/?state=open&after=${state.after}&limit=${PAGE}`);
  const known = new Set(state.tasks.map((t) => t.id));
  for (const t of data.results) if (!known.has(t.id)) state.tasks.push(t);
  if (data.results.length) state.after = data.results[data.results.length - 1].id;
  state.more = data.next_after !== null && data.next_after !== undefined;
}

function say(text) {
  note.textContent = text;
  note.hidden = !text;
}

// After a decision (or a review someone else decided) the task leaves the list.
async function dropCurrent() {
  state.tasks.splice(state.index, 1);
  if (state.index >= state.tasks.length) state.index = 0;
  state.vote = 0;
  state.mode = "view";
  if (state.tasks.length < 3 && state.more) {
    try {
      await loadMore();
    } catch (err) {
      showError(errorBox, err);
    }
  }
  render();
}

async function decide(body, outcome) {
  const task = current();
  if (!task || state.busy) return;
  clearError(errorBox);
  state.busy = true;
  setButtons();
  try {
    await api(`/api/v1/labeling/reviews/${task.id}/decide/`, { method: "POST", json: body });
    state.counts.open = Math.max(0, state.counts.open - 1);
    state.counts[outcome] += 1;
    state.session += 1;
    say(`Review ${task.id} ${outcome}.`);
    state.busy = false;
    await dropCurrent();
  } catch (err) {
    state.busy = false;
    if (err.code === "review_decided") {
      say(`Review ${task.id} was decided by someone else meanwhile.`);
      state.counts.open = Math.max(0, state.counts.open - 1);
      await dropCurrent();
      return;
    }
    showError(errorBox, err);
    render();
  }
}

function accept() {
  const task = current();
  if (!task || buttons.accept.disabled) return;
  if (task.annotation) return decide({ action: "accept" }, "accepted");
  const vote = task.votes[state.vote];
  return decide({ action: "accept", annotation: vote.annotation }, "accepted");
}

function startReject() {
  if (buttons.reject.disabled) return;
  state.mode = "reject";
  render();
  rejectComment.value = "";
  rejectComment.focus();
}

function startFix() {
  const task = current();
  if (!task || buttons.fix.disabled) return;
  const base = shownResult(task) || {};
  if (KIND === "boxes") state.fix = { boxes: (base.boxes || []).map((b) => ({ ...b })) };
  else if (KIND === "multi_label") state.fix = { labels: [...(base.labels || [])] };
  else state.fix = { label: base.label ?? null };
  state.selectedBox = KIND === "boxes" && state.fix.boxes.length ? 0 : -1;
  state.mode = "fix";
  render();
}

function cancelMode() {
  state.mode = "view";
  state.fix = null;
  clearError(errorBox);
  render();
}

function pickClass(name) {
  if (state.mode !== "fix") return;
  if (KIND === "multi_label") {
    const labels = new Set(state.fix.labels);
    if (labels.has(name)) labels.delete(name);
    else labels.add(name);
    state.fix.labels = [...labels].sort();
  } else if (KIND === "boxes") {
    if (state.selectedBox < 0) return;
    state.fix.boxes[state.selectedBox].label = name;
  } else {
    state.fix.label = name;
  }
  render();
}

function saveFix() {
  if (state.mode !== "fix" || state.busy) return;
  if (KIND === "single_label" && !state.fix.label) {
    showError(errorBox, { message: "Pick the right class with its key first." });
    return;
  }
  decide({ action: "fix", result: state.fix }, "fixed");
}

function next() {
  if (buttons.next.disabled) return;
  state.index = (state.index + 1) % state.tasks.length;
  state.vote = 0;
  say("");
  render();
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (state.mode === "reject") {
    if (event.key === "Escape") {
      event.preventDefault();
      cancelMode();
    }
    return; // typing the comment; Enter submits the form
  }
  const key = event.key;
  if (state.mode === "fix") {
    if (key === "Escape") return cancelMode();
    if (key === "Enter") {
      event.preventDefault();
      return saveFix();
    }
    if (KIND === "boxes" && key === "Tab" && state.fix.boxes.length) {
      event.preventDefault();
      const n = state.fix.boxes.length;
      state.selectedBox = (state.selectedBox + (event.shiftKey ? n - 1 : 1)) % n;
      return render();
    }
    if (KIND === "boxes" && (key === "Delete" || key === "Backspace") && state.selectedBox >= 0) {
      event.preventDefault();
      state.fix.boxes.splice(state.selectedBox, 1);
      state.selectedBox = Math.min(state.selectedBox, state.fix.boxes.length - 1);
      return render();
    }
    const cls = CLASSES.find((c) => c.key.toLowerCase() === key.toLowerCase());
    if (cls) {
      event.preventDefault();
      pickClass(cls.name);
    }
    return;
  }
  if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
  const task = current();
  if (!task) return;
  const lower = key.toLowerCase();
  if (lower === "a") accept();
  else if (lower === "r") startReject();
  else if (lower === "f") startFix();
  else if (lower === "n") next();
  else if (task.reason === "disagreement" && /^[1-9]$/.test(key) && Number(key) <= task.votes.length) {
    state.vote = Number(key) - 1;
    render();
  } else return;
  event.preventDefault();
}

function wire() {
  buttons.accept.addEventListener("click", accept);
  buttons.reject.addEventListener("click", startReject);
  buttons.fix.addEventListener("click", startFix);
  buttons.save.addEventListener("click", saveFix);
  buttons.next.addEventListener("click", next);
  el("reject-cancel").addEventListener("click", cancelMode);
  rejectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const comment = rejectComment.value.trim();
    if (!comment) {
      showError(errorBox, { message: "A rejection needs a comment: say what to change." });
      rejectComment.focus();
      return;
    }
    decide({ action: "reject", comment }, "rejected");
  });
  for (const b of document.querySelectorAll("#class-list .class-key")) {
    b.addEventListener("click", () => pickClass(b.dataset.name));
  }
  el("votes-list").addEventListener("click", (event) => {
    const li = event.target.closest("li[data-vote]");
    const task = current();
    if (!li || !task || task.reason !== "disagreement" || state.mode !== "view") return;
    state.vote = Number(li.dataset.vote);
    render();
  });
  stage.boxes.addEventListener("click", (event) => {
    const g = event.target.closest("g[data-index]");
    if (!g || state.mode !== "fix") return;
    state.selectedBox = Number(g.dataset.index);
    render();
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => {
    if (current()) render();
  });
}

async function start() {
  wire();
  try {
    await loadMore();
  } catch (err) {
    stage.message.textContent = "The open reviews could not be loaded.";
    showError(errorBox, err);
    return;
  }
  render();
  el("reviewer").dataset.ready = "true";
}

start();
