// Calls to Crucible's REST API from the console's pages: session cookie + CSRF header,
// and the API's {"error": {"code", "message", "fields"}} bodies turned into readable errors.

export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || {};
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export async function api(url, { method = "GET", json, form } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // multipart: the browser sets the boundary
  }
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, "network", `The server could not be reached (${err.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    if (error) throw new ApiError(response.status, error.code, error.message, error.fields);
    if (response.status === 413) throw new ApiError(413, "too_large", "The upload is larger than the server accepts.");
    throw new ApiError(response.status, `http_${response.status}`, `The server answered ${response.status} ${response.statusText}.`);
  }
  return data;
}

function flatFields(fields, prefix = "") {
  const out = [];
  for (const [key, value] of Object.entries(fields || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) out.push(...flatFields(value, name));
    else out.push([name, Array.isArray(value) ? value.join(" ") : String(value)]);
  }
  return out;
}

// Show an error in a page's error box: the message, then each field's problem when there are several.
export function showError(box, err) {
  box.replaceChildren();
  const message = document.createElement("p");
  message.textContent = err.message || String(err);
  box.append(message);
  const fields = flatFields(err.fields);
  if (fields.length > 1) {
    const list = document.createElement("ul");
    for (const [name, problem] of fields) {
      const item = document.createElement("li");
      item.textContent = `${name}: ${problem}`;
      list.append(item);
    }
    box.append(list);
  }
  if (err.code) box.dataset.code = err.code;
  box.hidden = false;
}

export function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.code;
}

// Element builder: h("td", {class: "num"}, "12").
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const total = Math.round(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (hours) return `${hours}h ${pad(minutes)}m`;
  if (minutes) return `${minutes}m ${pad(secs)}s`;
  return `${secs}s`;
}

export function percent(value, digits = 2) {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(digits)}%`;
}

export function number(value, digits = 4) {
  return value === null || value === undefined ? "—" : Number(value.toPrecision(digits)).toString();
}

// Form values: "" becomes null, numbers parsed where the input is a number input.
export function formValues(form, names) {
  const out = {};
  for (const name of names) {
    const field = form.elements[name];
    if (!field) continue;
    let value = field.value;
    if (field instanceof RadioNodeList) value = field.value;
    if (value === "" || value === undefined) out[name] = null;
    else if (field.type === "number") out[name] = Number(value);
    else out[name] = value;
  }
  return out;
}

// Poll `fn` every `ms` until it returns true; failures are retried at the same pace.
export function poll(fn, ms = 2000) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    let done = false;
    try {
      done = await fn();
    } catch (err) {
      console.warn("poll failed:", err);
    }
    if (!done && !stopped) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
  return () => {
    stopped = true;
  };
}

export function busy(button, isBusy, label) {
  if (isBusy) {
    button.dataset.label = button.textContent;
    button.textContent = label || "Working…";
    button.disabled = true;
  } else {
    button.textContent = button.dataset.label || button.textContent;
    button.disabled = false;
  }
}
