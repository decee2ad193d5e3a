// Boxes drawn on the item's image with the mouse: a drag on the image draws one, a click selects
// one, dragging a box moves it and its corner handles resize it.
//
// Boxes are kept in whole pixels of the original image (what is stored), so what is drawn is what
// gets saved however the image is scaled on screen. The layer over the image is placed and sized to
// the image as displayed (object-fit: contain letterboxes it); boxes sit in it in percentages.

const MIN_SCREEN_PX = 4; // a box smaller than this on screen is a slip of the mouse, not a box
const CORNERS = ["nw", "ne", "sw", "se"];

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

export class BoxEditor {
  constructor(layer, { classIndex, onChange }) {
    this.layer = layer;
    this.classIndex = classIndex; // class name -> position, for the box's colour
    this.onChange = onChange;
    this.currentClass = null; // the class a new box takes
    this.boxes = [];
    this.selected = -1;
    this.width = 1;
    this.height = 1;
    this.scale = 1;
    this.drag = null;
    layer.addEventListener("pointerdown", (e) => this.down(e));
    layer.addEventListener("pointermove", (e) => this.move(e));
    layer.addEventListener("pointerup", (e) => this.up(e));
    layer.addEventListener("pointercancel", (e) => this.up(e));
  }

  // A new item: its size in original pixels and the boxes to start from (a previous answer).
  load(width, height, boxes = []) {
    this.width = Math.max(width, 1);
    this.height = Math.max(height, 1);
    this.boxes = boxes.map((b) => ({ label: b.label, x: b.x, y: b.y, w: b.w, h: b.h }));
    this.selected = -1;
    this.drag = null;
    this.render();
  }

  // Put the layer exactly over the displayed image inside `stage`.
  layout(stage) {
    const sw = stage.clientWidth;
    const sh = stage.clientHeight;
    this.scale = Math.min(sw / this.width, sh / this.height);
    const dw = this.width * this.scale;
    const dh = this.height * this.scale;
    Object.assign(this.layer.style, {
      left: `${(sw - dw) / 2}px`,
      top: `${(sh - dh) / 2}px`,
      width: `${dw}px`,
      height: `${dh}px`,
    });
  }

  result() {
    return this.boxes.map((b) => ({ label: b.label, x: b.x, y: b.y, w: b.w, h: b.h }));
  }

  busy() {
    return this.drag !== null;
  }

  relabelSelected(label) {
    if (this.selected < 0) return;
    this.boxes[this.selected].label = label;
    this.changed();
  }

  removeSelected() {
    if (this.selected < 0) return false;
    this.boxes.splice(this.selected, 1);
    this.selected = -1;
    this.changed();
    return true;
  }

  // ---- pointer ----

  // The pointer's position in original-image pixels, clamped to the image.
  point(event) {
    const r = this.layer.getBoundingClientRect();
    return {
      x: clamp(Math.round(((event.clientX - r.left) / r.width) * this.width), 0, this.width),
      y: clamp(Math.round(((event.clientY - r.top) / r.height) * this.height), 0, this.height),
    };
  }

  down(event) {
    if (event.button !== 0 || !this.currentClass) return;
    event.preventDefault();
    const p = this.point(event);
    const handle = event.target.closest(".box-handle");
    const boxEl = event.target.closest(".box");
    if (handle) {
      const index = Number(handle.parentElement.dataset.index);
      const b = this.boxes[index];
      const corner = handle.dataset.corner;
      // The corner across from the handle stays put.
      const fixed = { x: corner.includes("w") ? b.x + b.w : b.x, y: corner.includes("n") ? b.y + b.h : b.y };
      this.drag = { mode: "resize", index, fixed, before: { ...b } };
    } else if (boxEl) {
      const index = Number(boxEl.dataset.index);
      this.selected = index;
      this.drag = { mode: "move", index, start: p, before: { ...this.boxes[index] } };
    } else {
      this.selected = -1;
      this.drag = { mode: "draw", start: p, index: -1 };
    }
    this.layer.setPointerCapture(event.pointerId);
    this.render();
  }

  move(event) {
    const d = this.drag;
    if (!d) return;
    const p = this.point(event);
    if (d.mode === "move") {
      const b = this.boxes[d.index];
      b.x = clamp(d.before.x + p.x - d.start.x, 0, this.width - b.w);
      b.y = clamp(d.before.y + p.y - d.start.y, 0, this.height - b.h);
    } else {
      const anchor = d.mode === "draw" ? d.start : d.fixed;
      const rect = {
        x: Math.min(anchor.x, p.x),
        y: Math.min(anchor.y, p.y),
        w: Math.abs(p.x - anchor.x),
        h: Math.abs(p.y - anchor.y),
      };
      if (d.mode === "draw" && d.index < 0) {
        if (!this.bigEnough(rect)) return;
        this.boxes.push({ label: this.currentClass, ...rect });
        d.index = this.selected = this.boxes.length - 1;
      } else {
        Object.assign(this.boxes[d.index], rect);
      }
    }
    this.render();
  }

  up(event) {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    if (this.layer.hasPointerCapture(event.pointerId)) this.layer.releasePointerCapture(event.pointerId);
    if (d.index >= 0 && !this.bigEnough(this.boxes[d.index])) {
      // Drawn too small, or resized to nothing: a new box is dropped, a resized one keeps its size.
      if (d.mode === "draw") {
        this.boxes.splice(d.index, 1);
        this.selected = -1;
      } else {
        Object.assign(this.boxes[d.index], d.before);
      }
    }
    // A box just drawn is not left selected: the next class key chooses the class of the next box,
    // it does not relabel this one (a click selects a box to change it).
    if (d.mode === "draw") this.selected = -1;
    this.changed();
  }

  bigEnough(b) {
    return b.w >= 1 && b.h >= 1 && b.w * this.scale >= MIN_SCREEN_PX && b.h * this.scale >= MIN_SCREEN_PX;
  }

  changed() {
    this.render();
    this.onChange(this);
  }

  // ---- drawing ----

  render() {
    const pct = (v, total) => `${(v / total) * 100}%`;
    const nodes = this.boxes.map((b, i) => {
      const el = document.createElement("div");
      el.className = `box c${this.classIndex(b.label) % 8}${i === this.selected ? " selected" : ""}`;
      el.dataset.index = i;
      el.dataset.label = b.label;
      Object.assign(el.style, {
        left: pct(b.x, this.width),
        top: pct(b.y, this.height),
        width: pct(b.w, this.width),
        height: pct(b.h, this.height),
      });
      const tag = document.createElement("span");
      tag.className = "box-tag";
      tag.textContent = b.label;
      el.append(tag);
      if (i === this.selected) {
        for (const corner of CORNERS) {
          const handle = document.createElement("span");
          handle.className = `box-handle ${corner}`;
          handle.dataset.corner = corner;
          el.append(handle);
        }
      }
      return el;
    });
    this.layer.replaceChildren(...nodes);
  }
}
