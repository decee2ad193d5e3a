// Run page: curves that grow while the run trains, progress, actions (abort, clone, download)
// and testing the model on one image or on a zip of images.
import { api, busy, clearError, duration, h, number, percent, poll, showError } from "./api.js";
import { COLORS, chartLib } from "./charts.js";

const FINISHED = new Set(["done", "failed", "aborted"]);
const state = JSON.parse(document.getElementById("run-data").textContent);
const runUrl = `/api/v1/runs/${state.id}/`;
const charts = {};

function lineOptions(yTitle, extra = {}) {
  return {
    animation: false,
    maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    scales: {
      x: { title: { display: true, text: "epoch" }, ticks: { precision: 0, maxRotation: 0, autoSkipPadding: 8 } },
      y: { title: { display: true, text: yTitle }, ...extra },
    },
    plugins: { legend: { position: "bottom" } },
  };
}

function series(epochs, key) {
  return epochs.map((e) => e[key]);
}

function makeCharts() {
  const Chart = chartLib();
  const labels = state.epochs.map((e) => e.epoch);
  charts.loss = new Chart(document.getElementById("loss-chart"), {
    type: "line",
    data: {
      labels,
      datasets: [
        { label: "train loss", data: series(state.epochs, "train_loss"), borderColor: COLORS.train, backgroundColor: COLORS.train, tension: 0.2 },
        { label: "val loss", data: series(state.epochs, "val_loss"), borderColor: COLORS.val, backgroundColor: COLORS.val, tension: 0.2 },
      ],
    },
    options: lineOptions("loss", { beginAtZero: true }),
  });
  charts.accuracy = new Chart(document.getElementById("accuracy-chart"), {
    type: "line",
    data: {
      labels,
      datasets: [
        {
          label: "val accuracy (%)",
          data: state.epochs.map((e) => (e.val_accuracy === null ? null : e.val_accuracy * 100)),
          borderColor: COLORS.accuracy,
          backgroundColor: COLORS.accuracy,
          tension: 0.2,
        },
      ],
    },
    options: lineOptions("accuracy (%)", { min: 0, max: 100 }),
  });
}

// Update the charts in place: same Chart objects, new points appended.
function updateCharts(epochs) {
  const labels = epochs.map((e) => e.epoch);
  charts.loss.data.labels = labels;
  charts.loss.data.datasets[0].data = series(epochs, "train_loss");
  charts.loss.data.datasets[1].data = series(epochs, "val_loss");
  charts.loss.update("none");
  charts.accuracy.data.labels = labels;
  charts.accuracy.data.datasets[0].data = epochs.map((e) => (e.val_accuracy === null ? null : e.val_accuracy * 100));
  charts.accuracy.update("none");
}

function updateEpochTable(epochs) {
  const body = document.querySelector("#epoch-table tbody");
  if (!epochs.length) return;
  body.replaceChildren(
    ...epochs.map((e) =>
      h("tr", {},
        h("td", { class: "num" }, e.epoch),
        h("td", { class: "num" }, number(e.train_loss)),
        h("td", { class: "num" }, number(e.val_loss)),
        h("td", { class: "num" }, percent(e.val_accuracy)),
        h("td", { class: "num" }, number(e.learning_rate)),
        h("td", { class: "num" }, e.images_per_sec === null ? "—" : Math.round(e.images_per_sec)),
        h("td", { class: "num" }, e.seconds === null ? "—" : e.seconds.toFixed(1)))),
  );
}

function updateEpochSelects(epochs) {
  if (!epochs.length) return;
  for (const select of document.querySelectorAll("select.epoch-select")) {
    const newest = String(epochs[epochs.length - 1].epoch);
    if (select.options.length === epochs.length && select.options[0]?.value === newest) continue;
    const wasLast = !select.value || select.value === select.options[0]?.value;
    const chosen = select.value;
    select.replaceChildren(...[...epochs].reverse().map((e) => h("option", { value: e.epoch }, e.epoch)));
    select.value = wasLast || !chosen ? newest : chosen;
  }
  updateDownloadLink();
}

function updateDownloadLink() {
  const link = document.getElementById("download-link");
  const select = document.getElementById("download-epoch");
  if (!link || !select) return;
  if (select.value) {
    link.href = `${runUrl}model/?epoch=${select.value}`;
    link.removeAttribute("aria-disabled");
  }
}

function updateProgress(run) {
  const status = document.getElementById("run-status");
  status.textContent = run.status;
  status.className = `status status-${run.status}`;
  const ratio = Math.max(0, Math.min(1, run.progress || 0));
  const bar = document.getElementById("run-bar");
  bar.style.width = `${(ratio * 100).toFixed(1)}%`;
  bar.parentElement.setAttribute("aria-valuenow", (ratio * 100).toFixed(1));
  document.getElementById("run-epoch").textContent = run.current_epoch;
  const total = (run.config && run.config.epochs) || state.total_epochs;
  document.getElementById("run-total").textContent = total;
  document.getElementById("run-ips").textContent = run.images_per_sec ? Math.round(run.images_per_sec) : "—";
  document.getElementById("run-eta").textContent = FINISHED.has(run.status) ? "—" : duration(run.eta_seconds);
  const error = document.getElementById("run-error");
  error.textContent = run.error || "";
  error.hidden = !run.error;
  const abort = document.getElementById("abort-btn");
  if (abort && FINISHED.has(run.status)) abort.hidden = true;
}

function apply(run) {
  const epochs = run.epochs || [];
  updateProgress(run);
  if (epochs.length !== state.epochs.length || epochs.some((e, i) => e.val_accuracy !== state.epochs[i]?.val_accuracy)) {
    updateCharts(epochs);
    updateEpochTable(epochs);
    updateEpochSelects(epochs);
  }
  state.epochs = epochs;
  state.status = run.status;
}

function followRun() {
  if (FINISHED.has(state.status)) return;
  poll(async () => {
    const run = await api(runUrl);
    apply(run);
    return FINISHED.has(run.status);
  }, 2000);
}

function setupActions() {
  const errorBox = document.getElementById("action-error");
  if (!errorBox) return;
  const abort = document.getElementById("abort-btn");
  abort?.addEventListener("click", async () => {
    if (!window.confirm("Abort this run? It stops after the current batch.")) return;
    clearError(errorBox);
    busy(abort, true, "Aborting…");
    try {
      apply(await api(`${runUrl}abort/`, { method: "POST", json: {} }));
    } catch (err) {
      showError(errorBox, err);
    } finally {
      busy(abort, false);
    }
  });
  for (const button of document.querySelectorAll(".clone-btn")) {
    button.addEventListener("click", async () => {
      clearError(errorBox);
      busy(button, true, "Cloning…");
      try {
        const clone = await api(`${runUrl}clone/`, { method: "POST", json: { new_seed: button.dataset.newSeed === "true" } });
        window.location.assign(`/runs/${clone.id}/`);
      } catch (err) {
        showError(errorBox, err);
        busy(button, false);
      }
    });
  }
  document.getElementById("download-epoch")?.addEventListener("change", updateDownloadLink);
}

function renderTop(list, top) {
  list.replaceChildren(
    ...top.map((t, i) =>
      h("li", { class: i === 0 ? "best" : "" },
        h("span", { class: "toplabel" }, t.label),
        h("span", { class: "probbar" }, h("span", { style: `width: ${(t.probability * 100).toFixed(1)}%` })),
        h("span", { class: "topvalue" }, percent(t.probability)))),
  );
}

function renderWarnings(container, warnings) {
  container.replaceChildren(
    ...(warnings || []).map((w) =>
      h("div", { class: "warning", "data-code": w.code },
        h("strong", {}, w.message),
        w.advice ? h("p", {}, w.advice) : null)),
  );
}

// A form that uploads one file (and the chosen epoch) to the classify API and renders the answer.
function setupUpload({ formId, cardId, resultId, field, missing, render }) {
  const form = document.getElementById(formId);
  const errorBox = document.getElementById(cardId).querySelector(".error-box");
  const result = document.getElementById(resultId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const file = form.elements[field].files[0];
    if (!file) return showError(errorBox, new Error(missing));
    const data = new FormData();
    data.append(field, file);
    if (form.elements.epoch.value) data.append("epoch", form.elements.epoch.value);
    const button = form.querySelector('button[type="submit"]');
    busy(button, true, "Classifying…");
    try {
      render(await api(form.dataset.url, { method: "POST", form: data }), file, result);
      result.hidden = false;
    } catch (err) {
      result.hidden = true;
      showError(errorBox, err);
    } finally {
      busy(button, false);
    }
  });
}

function setupClassifyOne() {
  setupUpload({
    formId: "classify-form", cardId: "classify-one", resultId: "classify-result", field: "image",
    missing: "Choose an image to test.",
    render: (answer, file) => {
      const preview = document.getElementById("classify-preview");
      if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(file);
      document.getElementById("classify-epoch").textContent = `model at epoch ${answer.epoch}`;
      renderTop(document.getElementById("classify-top"), answer.top || []);
      const steps = document.getElementById("classify-steps");
      steps.replaceChildren(...(answer.preprocessing || []).map((s) => h("li", {}, s)));
      renderWarnings(document.getElementById("classify-warnings"), answer.warnings);
    },
  });
}

function confusionTable(confusion) {
  const labels = confusion.labels;
  const max = Math.max(1, ...confusion.matrix.flat());
  return h("table", { class: "grid confusion" },
    h("caption", {}, "Rows: true label; columns: predicted label"),
    h("thead", {}, h("tr", {}, h("th", {}, "true \\ predicted"), labels.map((l) => h("th", { class: "num" }, l)))),
    h("tbody", {},
      confusion.matrix.map((row, i) =>
        h("tr", {},
          h("th", {}, labels[i]),
          row.map((n, j) => {
            const alpha = n ? 0.15 + 0.6 * (n / max) : 0;
            const tone = i === j ? "47, 111, 222" : "214, 69, 65";
            return h("td", { class: "num", style: `background: rgba(${tone}, ${alpha.toFixed(2)})` }, n);
          })))));
}

function setupClassifyMany() {
  setupUpload({
    formId: "classify-many-form", cardId: "classify-many", resultId: "classify-many-result", field: "file",
    missing: "Choose a zip file of class subfolders.",
    render: (answer, file, result) => {
      const results = answer.results || [];
      const warned = results.filter((r) => (r.warnings || []).length).length;
      const parts = [
        h("p", { class: "accuracy" },
          answer.accuracy === null || answer.accuracy === undefined
            ? h("span", {}, `${results.length} images classified (no labels, so no accuracy).`)
            : h("span", {}, h("strong", { id: "many-accuracy" }, percent(answer.accuracy)), ` accuracy on ${results.length} images at epoch ${answer.epoch}`)),
      ];
      if (warned) parts.push(h("p", { class: "warning" }, `${warned} ${warned === 1 ? "image does" : "images do"} not look like the training data; see the warnings per image below.`));
      if (answer.confusion) parts.push(confusionTable(answer.confusion));
      parts.push(
        h("details", {}, h("summary", {}, "Per image"),
          h("table", { class: "grid" },
            h("thead", {}, h("tr", {}, h("th", {}, "Image"), h("th", {}, "Label"), h("th", {}, "Predicted"), h("th", { class: "num" }, "Probability"), h("th", {}, "Warnings"))),
            h("tbody", {},
              results.map((r) => {
                const best = (r.top || [])[0] || {};
                const wrong = r.label !== null && r.label !== undefined && best.label !== r.label;
                return h("tr", { class: wrong ? "wrong" : "" },
                  h("td", {}, h("code", {}, r.name)), h("td", {}, r.label ?? "—"), h("td", {}, best.label ?? "—"),
                  h("td", { class: "num" }, percent(best.probability)),
                  h("td", {}, (r.warnings || []).map((w) => w.message).join("; ")));
              })))));
      result.replaceChildren(...parts);
    },
  });
}

makeCharts();
setupActions();
setupClassifyOne();
setupClassifyMany();
followRun();
window.crucibleRun = { charts, state };
