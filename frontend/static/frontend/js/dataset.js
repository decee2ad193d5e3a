// Dataset page: images per class for each split, a gallery per class, the status while the
// shards are written, the comparison with another version of the project, and the form that
// starts a training run.
import { api, busy, clearError, formValues, h, poll, showError } from "./api.js";
import { COLORS, chartLib } from "./charts.js";

const head = document.getElementById("dataset-head");
const datasetId = head.dataset.datasetId;
const chartData = JSON.parse(document.getElementById("dataset-chart-data").textContent);

function drawHistograms() {
  const Chart = chartLib();
  for (const canvas of document.querySelectorAll("#histograms canvas[data-split]")) {
    const split = canvas.dataset.split;
    const counts = chartData.counts[split] || {};
    const labels = chartData.class_names.length ? chartData.class_names : Object.keys(counts);
    new Chart(canvas, {
      type: "bar",
      data: {
        labels,
        datasets: [{ label: `${split} images`, data: labels.map((c) => counts[c] || 0), backgroundColor: COLORS[split] }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: false }, tooltip: { callbacks: { title: (items) => `class ${items[0].label}` } } },
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { title: { display: true, text: "class" } } },
      },
    });
  }
}

async function loadGallery() {
  const container = document.getElementById("gallery");
  const errorBox = document.getElementById("gallery-error");
  const split = document.getElementById("gallery-split").value;
  clearError(errorBox);
  container.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const data = await api(`${container.dataset.url}?split=${encodeURIComponent(split)}&per_class=8`);
    const classes = Object.entries(data.classes || {});
    container.replaceChildren();
    if (!classes.length) {
      container.append(h("p", { class: "empty" }, `No images in the ${split} split.`));
      return;
    }
    for (const [label, images] of classes) {
      container.append(
        h("div", { class: "gallery-row" },
          h("div", { class: "gallery-label" }, label),
          h("div", { class: "thumbs" },
            images.map((img) => h("img", { src: img.url, alt: `class ${label}`, title: img.sha256, loading: "lazy", class: "thumb pixelated" })))),
      );
    }
  } catch (err) {
    container.replaceChildren();
    showError(errorBox, err);
  }
}

async function loadDiff() {
  const select = document.getElementById("diff-other");
  const result = document.getElementById("diff-result");
  const errorBox = document.getElementById("diff-error");
  clearError(errorBox);
  result.replaceChildren();
  if (!select.value) return;
  result.append(h("p", { class: "muted" }, "Loading…"));
  try {
    // From the chosen version (a) to this one (b).
    const diff = await api(`/api/v1/datasets/${encodeURIComponent(select.value)}/diff/${datasetId}/?limit=20`);
    const s = diff.summary;
    const nodes = [
      h("p", { id: "diff-summary" },
        `${s.added} added, ${s.removed} removed, ${s.relabelled} relabelled, ${s.moved} moved split, ${s.unchanged} unchanged`),
    ];
    for (const change of diff.spec_changed || []) {
      nodes.push(h("p", { class: "note" }, `Spec: ${change.field} ${change.a} → ${change.b}`));
    }
    const fields = ["added", "removed", "relabelled_in", "relabelled_out", "moved", "unchanged"];
    const classes = (diff.classes || []).filter((c) => fields.some((f) => c[f]));
    if (classes.length) {
      nodes.push(
        h("table", { class: "grid", id: "diff-table" },
          h("thead", {}, h("tr", {}, ["Class", "Added", "Removed", "Relabelled in", "Relabelled out", "Moved", "Unchanged"].map((t) => h("th", {}, t)))),
          h("tbody", {}, classes.map((c) => h("tr", {}, h("td", {}, c.label), fields.map((f) => h("td", { class: "num" }, String(c[f]))))))),
      );
    }
    const relabelled = (diff.items && diff.items.relabelled) || [];
    if (relabelled.length) {
      const who = (c) => (c ? `${c.actor || "system"} via ${c.via}${c.ref != null ? ` ${c.ref}` : ""}` : "—");
      nodes.push(
        h("h3", {}, `Relabelled (first ${relabelled.length} of ${s.relabelled})`),
        h("table", { class: "grid", id: "diff-relabelled" },
          h("thead", {}, h("tr", {}, ["Asset", "Label", "Changed by", "When"].map((t) => h("th", {}, t)))),
          h("tbody", {}, relabelled.map((item) => h("tr", {},
            h("td", { class: "mono" }, item.sha256.slice(0, 12)),
            h("td", {}, `${item.old_label} → ${item.new_label}`),
            h("td", {}, who(item.changed_by)),
            h("td", {}, item.changed_by ? new Date(item.changed_by.at).toLocaleString() : ""))))),
      );
    }
    result.replaceChildren(...nodes);
  } catch (err) {
    result.replaceChildren();
    showError(errorBox, err);
  }
}

function followStatus() {
  if (head.dataset.status !== "materializing") return;
  poll(async () => {
    const dataset = await api(`/api/v1/datasets/${datasetId}/`);
    if (dataset.status === "materializing") return false;
    window.location.reload();
    return true;
  });
}

function setupRunForm() {
  const form = document.getElementById("run-form");
  if (!form) return;
  const errorBox = form.querySelector(".error-box");
  const policy = form.elements.lr_policy;
  const showPolicy = () => {
    for (const label of form.querySelectorAll("[data-policy]")) label.hidden = label.dataset.policy !== policy.value;
  };
  policy.addEventListener("change", showPolicy);
  showPolicy();
  const fromRun = form.elements.from_run;
  const fromEpoch = form.elements.from_epoch;
  fromRun.addEventListener("change", () => {
    const option = fromRun.selectedOptions[0];
    fromEpoch.disabled = !fromRun.value;
    fromEpoch.max = option.dataset.lastEpoch || "";
    fromEpoch.placeholder = option.dataset.lastEpoch ? `last (${option.dataset.lastEpoch})` : "last";
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const body = formValues(form, [
      "name", "network", "epochs", "batch_size", "lr", "lr_policy", "lr_step_epochs", "lr_gamma",
      "optimizer", "momentum", "weight_decay", "seed", "device", "from_run", "from_epoch",
    ]);
    if (body.from_run === null) {
      delete body.from_epoch;
    } else {
      body.from_run = Number(body.from_run);
      if (body.from_epoch === null) body.from_epoch = Number(fromRun.selectedOptions[0].dataset.lastEpoch);
    }
    if (body.lr_policy !== "step") {
      delete body.lr_step_epochs;
      delete body.lr_gamma;
    }
    const button = form.querySelector('button[type="submit"]');
    busy(button, true, "Starting…");
    try {
      const run = await api(form.dataset.url, { method: "POST", json: body });
      window.location.assign(`/runs/${run.id}/`);
    } catch (err) {
      showError(errorBox, err);
      busy(button, false);
    }
  });
}

drawHistograms();
document.getElementById("gallery-split").addEventListener("change", loadGallery);
loadGallery();
const diffSelect = document.getElementById("diff-other");
if (diffSelect) diffSelect.addEventListener("change", loadDiff);
followStatus();
setupRunForm();
