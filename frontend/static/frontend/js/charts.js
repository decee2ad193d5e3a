// Chart.js (vendored, loaded as window.Chart by a classic script before this module) with the console's look.
const Chart = window.Chart;

export const COLORS = {
  train: "#2f6fde",
  val: "#e07a1f",
  test: "#3a9b5c",
  accuracy: "#7b4fc9",
  grid: "#e6e8ee",
  text: "#3b4252",
};

if (Chart) {
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = COLORS.text;
  Chart.defaults.borderColor = COLORS.grid;
}

export function chartLib() {
  if (!Chart) throw new Error("Chart.js did not load");
  return Chart;
}
