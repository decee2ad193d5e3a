// Dataset page, explorer: the version's images filtered by class, split, open finding kind and
// "label changed since version X", a page at a time (keyset pages: `next` is the `after` of the next).
import { api, clearError, h, showError } from "./api.js";

const form = document.getElementById("explore-form");
const result = document.getElementById("explore-result");
const more = document.getElementById("explore-more");
const errorBox = document.getElementById("explore-error");
let after = null;

function query() {
  const params = new URLSearchParams({ limit: "60" });
  for (const [name, value] of new FormData(form)) {
    if (value) params.set(name, value);
  }
  if (after) params.set("after", String(after));
  return params;
}

async function load(reset) {
  clearError(errorBox);
  if (reset) {
    after = null;
    result.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  }
  try {
    const data = await api(`${form.dataset.url}?${query()}`);
    if (reset) result.replaceChildren();
    if (reset && !data.results.length) {
      result.append(h("p", { class: "empty" }, "No image matches."));
    }
    for (const item of data.results) {
      result.append(
        h("img", {
          src: item.url, alt: `class ${item.label}, ${item.split}`, title: `${item.sha256} · ${item.label} · ${item.split}`,
          loading: "lazy", class: "thumb pixelated", "data-sha256": item.sha256,
        }),
      );
    }
    after = data.next;
    more.hidden = !after;
  } catch (err) {
    if (reset) result.replaceChildren();
    showError(errorBox, err);
  }
}

if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
}
