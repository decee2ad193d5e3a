// Project page: start imports and follow their progress; create dataset versions.
import { api, busy, clearError, formValues, h, poll, showError } from "./api.js";

const FINISHED = new Set(["done", "failed"]);

function renderErrors(cell, job) {
  cell.replaceChildren();
  const errors = job.errors || [];
  if (errors.length) {
    const list = h("ul", { class: "filelist" }, errors.map((e) => h("li", {}, h("code", {}, e.path), ` — ${e.reason}`)));
    cell.append(h("details", {}, h("summary", {}, `${errors.length} unreadable`), list));
  } else {
    cell.append(h("span", { class: "muted" }, "none"));
  }
  if (job.message) cell.append(h("div", { class: "muted small", "data-field": "message" }, job.message));
}

function updateRow(row, job) {
  const field = (name) => row.querySelector(`[data-field="${name}"]`);
  row.dataset.importId = job.id;
  row.dataset.status = job.status;
  const status = field("status");
  status.textContent = job.status;
  status.className = `status status-${job.status}`;
  if (job.created_at && !field("created").textContent.trim()) {
    field("created").textContent = new Date(job.created_at).toLocaleString();
  }
  const source = field("source");
  if (!source.textContent.trim()) source.replaceChildren(h("span", { class: "tag" }, job.source_kind), ` ${job.source_label || ""}`);
  const ratio = job.total ? Math.round((100 * job.processed) / job.total) : job.status === "done" ? 100 : 0;
  field("bar").style.width = `${ratio}%`;
  field("bar").parentElement.setAttribute("aria-valuenow", job.processed);
  field("bar").parentElement.setAttribute("aria-valuemax", job.total);
  field("progress").textContent = `${job.processed} / ${job.total}`;
  field("imported").textContent = job.imported;
  field("duplicates").textContent = job.duplicates;
  renderErrors(field("errors"), job);
}

function follow(row) {
  const id = row.dataset.importId;
  poll(async () => {
    const job = await api(`/api/v1/imports/${id}/`);
    updateRow(row, job);
    if (FINISHED.has(job.status)) {
      if (job.status === "done") document.getElementById("classes-stale")?.removeAttribute("hidden");
      return true;
    }
    return false;
  });
}

function setupImports() {
  const table = document.getElementById("import-table");
  if (!table) return;
  for (const row of table.querySelectorAll("tr.import-row")) {
    if (!FINISHED.has(row.dataset.status)) follow(row);
  }
  const form = document.getElementById("import-form");
  if (!form) return;
  const errorBox = form.querySelector(".error-box");
  const showKind = () => {
    const kind = form.elements.kind.value;
    for (const label of form.querySelectorAll("[data-kind]")) label.hidden = label.dataset.kind !== kind;
  };
  for (const radio of form.querySelectorAll('input[name="kind"]')) radio.addEventListener("change", showKind);
  showKind();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const button = form.querySelector('button[type="submit"]');
    const kind = form.elements.kind.value;
    let request;
    if (kind === "zip") {
      const file = form.elements.file.files[0];
      if (!file) return showError(errorBox, new Error("Choose a zip file to upload."));
      const data = new FormData();
      data.append("file", file);
      request = { method: "POST", form: data };
    } else {
      const path = form.elements.path.value.trim();
      if (!path) return showError(errorBox, new Error("Name a folder on the server."));
      request = { method: "POST", json: { path } };
    }
    busy(button, true, kind === "zip" ? "Uploading…" : "Starting…");
    try {
      const job = await api(form.dataset.url, request);
      const template = document.getElementById("import-row-template");
      const row = template.content.querySelector("tr").cloneNode(true);
      const body = table.tBodies[0];
      body.querySelector(".empty-row")?.setAttribute("hidden", "");
      body.prepend(row);
      updateRow(row, job);
      if (!FINISHED.has(job.status)) follow(row);
      form.reset();
      showKind();
    } catch (err) {
      showError(errorBox, err);
    } finally {
      busy(button, false);
    }
  });
}

function setupDatasetForm() {
  const form = document.getElementById("dataset-form");
  if (!form) return;
  const errorBox = form.querySelector(".error-box");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errorBox);
    const body = formValues(form, [
      "name", "width", "height", "resize_mode", "val_percent", "test_percent",
      "min_per_class", "max_per_class", "split_seed",
    ]);
    body.channels = Number(form.elements.channels.value);
    for (const key of ["val_percent", "test_percent"]) if (body[key] === null) delete body[key];
    const button = form.querySelector('button[type="submit"]');
    busy(button, true, "Creating…");
    try {
      const dataset = await api(form.dataset.url, { method: "POST", json: body });
      window.location.assign(`/datasets/${dataset.id}/`);
    } catch (err) {
      showError(errorBox, err);
      busy(button, false);
    }
  });
}

setupImports();
setupDatasetForm();
