// Queue page: submissions per hour as a bar chart, the queue settings form and the form that queues
// the project's unlabelled images. Both forms write through the REST API, then the page reloads its figures.
// Also: the agreement figures (read from the API after the page is shown, since they scan every
// annotation of the project) and the Pause / Resume buttons of the annotator table.
import { api, busy, clearError, duration, formValues, h, number, percent, showError } from "./api.js";
import { COLORS, chartLib } from "./charts.js";

const chartData = JSON.parse(document.getElementById("queue-chart-data").textContent);

function hourLabel(iso) {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, "0")}:00`;
}

function drawThroughput() {
  const canvas = document.getElementById("throughput-chart");
  if (!canvas) return;
  const Chart = chartLib();
  const chart = new Chart(canvas, {
    type: "bar",
    data: {
      labels: chartData.hours.map(hourLabel),
      datasets: [{ label: "submissions", data: chartData.submissions, backgroundColor: COLORS.train }],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { title: (items) => new Date(chartData.hours[items[0].dataIndex]).toLocaleString() } },
      },
      scales: {
        y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "submissions" } },
        x: { title: { display: true, text: "hour (local time)" } },
      },
    },
  });
  canvas.dataset.drawn = String(chart.data.labels.length);
}

function setupSettings() {
  const form = document.getElementById("settings-form");
  if (!form) return;
  const errorBox = form.querySelector(".error-box");
  const saved = document.getElementById("settings-saved");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    saved.hidden = true;
    const button = form.querySelector('button[type="submit"]');
    busy(button, true, "Saving…");
    try {
      const body = formValues(form, ["order", "lease_ttl_seconds"]);
      const result = await api(form.dataset.url, { method: "PUT", json: body });
      document.getElementById("current-order").textContent = result.order;
      const ttl = document.getElementById("current-ttl");
      ttl.textContent = `${duration(result.lease_ttl_seconds)}${result.lease_ttl_default ? " (server default)" : ""}`;
      saved.textContent = `Saved: order ${result.order}, lease TTL ${duration(result.lease_ttl_seconds)}.`;
      saved.hidden = false;
    } catch (err) {
      showError(errorBox, err);
    } finally {
      busy(button, false);
    }
  });
}

function setupAddItems() {
  const form = document.getElementById("add-items-form");
  if (!form) return;
  const errorBox = form.querySelector(".error-box");
  const result = document.getElementById("add-items-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    result.hidden = true;
    const button = form.querySelector('button[type="submit"]');
    busy(button, true, "Adding…");
    try {
      const body = formValues(form, ["required_annotations", "priority"]);
      const data = await api(form.dataset.url, { method: "POST", json: body });
      result.textContent = data.added
        ? `${data.added} item(s) added. Reloading the figures…`
        : "Nothing to add: every unlabelled image is already queued.";
      result.hidden = false;
      if (data.added) setTimeout(() => window.location.reload(), 800);
    } catch (err) {
      showError(errorBox, err);
    } finally {
      busy(button, false);
    }
  });
}

const pageConfig = JSON.parse(document.getElementById("queue-config").textContent);

function kappa(value) {
  return value === null || value === undefined ? "—" : value.toFixed(3);
}

async function loadAgreement() {
  const section = document.getElementById("agreement");
  if (!section) return;
  const scope = document.getElementById("agreement-scope");
  const errorBox = document.getElementById("agreement-error");
  let data;
  try {
    data = await api(section.dataset.url);
  } catch (err) {
    scope.textContent = "";
    showError(errorBox, err);
    return;
  }
  scope.textContent = `${data.items} item(s) with two or more annotators, ${data.annotators} annotator(s), ${data.kind.replace("_", "-")}`;
  section.dataset.loaded = "true";
  if (!data.items) {
    document.getElementById("agreement-empty").hidden = false;
    return;
  }
  document.getElementById("agreement-figures").hidden = false;
  document.getElementById("agreement-percent").textContent = percent(data.percent, 1);
  const boxes = data.boxes;
  if (boxes) {
    document.getElementById("agreement-fleiss-stat").hidden = true;
    document.getElementById("agreement-iou-stat").hidden = false;
    document.getElementById("agreement-f1-stat").hidden = false;
    document.getElementById("agreement-iou").textContent = number(boxes.mean_iou, 3);
    document.getElementById("agreement-f1").textContent = number(boxes.f1, 3);
  } else {
    document.getElementById("agreement-fleiss").textContent = kappa(data.fleiss_kappa);
    document.getElementById("agreement-fleiss-items").textContent =
      data.fleiss_kappa === null
        ? "undefined: every answer is the same, so chance agreement is already 1"
        : `over ${data.fleiss_items} item(s) with the most common number of annotators`;
  }
  const table = document.getElementById("agreement-pairs");
  const headers = boxes
    ? ["Annotator", "Annotator", "Items", "Agreement", "Mean IoU", "F1"]
    : ["Annotator", "Annotator", "Items", "Agreement", "Cohen's kappa"];
  table.tHead.replaceChildren(h("tr", {}, headers.map((t, i) => h("th", { class: i >= 2 ? "num" : null }, t))));
  table.tBodies[0].replaceChildren(
    ...data.pairs.map((p) =>
      h(
        "tr",
        { "data-pair": `${p.a_name}-${p.b_name}` },
        h("td", {}, p.a_name),
        h("td", {}, p.b_name),
        h("td", { class: "num" }, p.items),
        h("td", { class: "num" }, percent(p.percent, 1)),
        boxes ? [h("td", { class: "num" }, number(p.mean_iou, 3)), h("td", { class: "num" }, number(p.f1, 3))] : h("td", { class: "num" }, kappa(p.cohen_kappa)),
      ),
    ),
  );
  table.hidden = false;
}

function setRowState(row, paused, reason) {
  row.dataset.paused = String(paused);
  row.classList.toggle("paused", paused);
  const state = row.querySelector(".state-cell");
  state.replaceChildren(
    ...(paused
      ? [h("span", { class: "status status-paused" }, "paused"), " ", h("span", { class: "muted small pause-reason" }, reason)]
      : [h("span", { class: "status status-active" }, "active")]),
  );
  const actions = row.querySelector(".actions-cell");
  actions.replaceChildren(
    paused ? h("button", { type: "button", class: "resume-btn" }, "Resume") : h("button", { type: "button", class: "pause-btn danger" }, "Pause"),
  );
}

function annotatorUrl(row, action) {
  return `/api/v1/projects/${pageConfig.project_id}/annotators/${row.dataset.annotatorId}/${action}/`;
}

function setupPauseButtons() {
  const table = document.getElementById("annotator-table");
  if (!table || !pageConfig.can_write) return;
  const errorBox = document.getElementById("annotator-error");
  // Pause asks for the reason the annotator will be shown, inline in the row.
  const askReason = (row) => {
    const cell = row.querySelector(".actions-cell");
    const input = h("input", { type: "text", class: "pause-reason-input", placeholder: "reason shown to the annotator", "aria-label": "reason for pausing" });
    const confirm = h("button", { type: "submit", class: "danger pause-confirm" }, "Pause");
    const cancel = h("button", { type: "button", class: "pause-cancel" }, "Cancel");
    const form = h("form", { class: "pause-form" }, input, confirm, cancel);
    cell.replaceChildren(form);
    input.focus();
    cancel.addEventListener("click", () => setRowState(row, false, ""));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const reason = input.value.trim();
      if (!reason) {
        input.focus();
        return;
      }
      clearError(errorBox);
      busy(confirm, true, "Pausing…");
      try {
        await api(annotatorUrl(row, "pause"), { method: "POST", json: { reason } });
        setRowState(row, true, reason);
      } catch (err) {
        showError(errorBox, err);
        busy(confirm, false);
      }
    });
  };
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const row = button.closest("tr[data-annotator-id]");
    if (!row) return;
    if (button.classList.contains("pause-btn")) {
      askReason(row);
    } else if (button.classList.contains("resume-btn")) {
      clearError(errorBox);
      busy(button, true, "Resuming…");
      try {
        await api(annotatorUrl(row, "resume"), { method: "POST", json: {} });
        setRowState(row, false, "");
      } catch (err) {
        showError(errorBox, err);
        busy(button, false);
      }
    }
  });
}

drawThroughput();
setupSettings();
setupAddItems();
setupPauseButtons();
loadAgreement();
