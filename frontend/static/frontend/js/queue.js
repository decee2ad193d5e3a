// Queue page: submissions per hour as a bar chart, the queue settings form and the form that queues
// the project's unlabelled images. Both forms write through the REST API, then the page reloads its figures.
import { api, busy, clearError, duration, formValues, showError } from "./api.js";
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

drawThroughput();
setupSettings();
setupAddItems();
