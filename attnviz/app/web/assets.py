"""The page's stylesheet and the few lines of browser script it runs (no files, nothing fetched from outside)."""
from __future__ import annotations

NARROW_PX = 700   # below this width the grid becomes one card per model
DISAGREE_ROW_MIN_PX = 520   # a "where they disagree" picture is at least this wide where the frame allows
DISAGREE_ROW_RATIO = "524 / 146"   # its width / height (dataset.views.disagreement_row at ROW_CELL = 128)

CSS = """
/* tiny benchmark scenes fill the upload box instead of sitting at 128 px */
#input-image img { width: 100%; height: 100%; object-fit: contain; }
/* clickable pictures are never drawn larger than they are: Gradio maps clicks as if they were not */
#box-picker img, #query-image img { width: auto !important; height: auto !important; max-width: 100%;
  max-height: 100%; object-fit: contain; }
/* a visible focus ring on every checkbox and radio (Gradio's default draws none on some) */
#cam-methods input:focus-visible, #colour-scale input:focus-visible, input[type=checkbox]:focus-visible {
  outline: 3px solid var(--color-accent, #f97316) !important; outline-offset: 2px; }
/* gallery captions sit under their picture and wrap, instead of being cut or covering the map; the gallery is as
   tall as its pictures (Gradio's is a fixed-height scroll box of square tiles, which crops a wide picture) */
#attention-gallery .thumbnail-item, #ds-gallery .thumbnail-item { aspect-ratio: auto !important;
  height: auto !important; display: flex; flex-direction: column; }
#attention-gallery .thumbnail-lg > img { height: auto !important; aspect-ratio: 200 / 218; }
#attention-gallery .caption-label, #ds-gallery .caption-label { position: static !important;
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  max-width: 100% !important; opacity: 1 !important; border: none !important;
  border-top: 1px solid var(--border-color-primary) !important; border-radius: 0 !important; }
#attention-gallery .grid-wrap.fixed-height, #ds-gallery .grid-wrap.fixed-height { max-height: none !important;
  min-height: 0 !important; overflow-y: visible !important; }
@media (max-width: 640px) {
  #attention-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
}
/* where they disagree: one wide picture per image (input, reference map, variant map, difference), two side by
   side on a wide screen; the picture's shape is known before it loads (the gallery loads them lazily) */
#ds-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(min(100%, ROW_MINpx), 1fr)) !important;
  grid-auto-rows: auto !important; }
#ds-gallery .thumbnail-lg > img { height: auto !important; aspect-ratio: ROW_RATIO; }
#ds-disagree-help p { font-size: 13px; margin: 0; }
@media (max-width: 640px) { #ds-gallery .grid-wrap { padding: 0 !important; } }
#ood-note { border-left: 4px solid var(--color-accent, #f97316); padding-left: 10px; }
/* the method and smoothing chips: tighter rows (21 methods would otherwise take seven tall rows) */
#cam-methods .wrap, #smoothing .wrap { gap: 6px !important; }
#cam-methods label, #smoothing label { padding-top: 4px !important; padding-bottom: 4px !important; }
#image-error { color: var(--error-text-color, #b91c1c); }
#run-message { border-left: 4px solid var(--error-text-color, #b91c1c); padding-left: 10px; }
#checkpoint-status .av-refused { border-left: 4px solid var(--error-text-color, #b91c1c); padding-left: 10px; }
/* Compare and its progress share a row; the progress box keeps its place so nothing jumps. Gradio's progress
   overlay puts its timer absolutely at the bottom right, over the bar in a short box and over the text in a narrow
   one: here the description, the bar and the timer are stacked in the flow instead. */
#run-row { align-items: center; }
#run-progress { min-height: 60px; min-width: 220px; }
#run-progress .wrap { justify-content: center; padding: 2px 8px; gap: 2px; bottom: 0; }
#run-progress .progress-level-inner { margin: 0 auto 2px auto; text-align: center; white-space: normal;
  overflow-wrap: anywhere; }
#run-progress .meta-text, #run-progress .meta-text-center { position: static; transform: none; padding: 0;
  text-align: center; }
@media (max-width: 640px) {
  /* a phone: the progress goes under Compare, full width; Compare and the examples come right after the upload
     box (before the model list), so the first screen has all three */
  #run-row { flex-wrap: wrap; row-gap: 0; }
  #run-row > * { flex: 1 1 100% !important; min-width: 0 !important; }
  #run-progress { min-height: 0; }   /* no empty band under Compare while nothing runs */
  #run-progress:has(.wrap:not(.hide)) { min-height: 60px; }
  #run-row { order: -3; }
  #run-message { order: -2; }
  #examples { order: -1; }
  #intro p { font-size: 13px; line-height: 1.35; }
}
#examples .gallery { flex-wrap: wrap; }

/* ---- the grid: scaled to the frame, titles stay visible, one card per model on a narrow screen ---- */
/* Gradio's page container clips with overflow: hidden, which makes it the scroll container of every sticky
   element (the grid's titles would never stick); clip cuts the same overflow without being one */
.gradio-container { overflow: clip !important; }
#grid .av-grid { width: 100%; }
#grid table.av-cells th, #grid table.av-cells td { border: none; }
#grid table.av-cells { width: 100%; table-layout: fixed; border-collapse: separate; border-spacing: 4px; }
#grid table.av-cells col.av-label-col { width: 150px; }
#grid table.av-cells thead th { position: sticky; top: 0; z-index: 2; background: var(--background-fill-primary);
  font-weight: 600; font-size: 13px; text-align: center; padding: 4px 2px; vertical-align: bottom;
  overflow-wrap: anywhere; }
#grid table.av-cells thead th small { display: block; font-weight: 400; font-size: 11px;
  color: var(--body-text-color-subdued); }
#grid table.av-cells th.av-label { text-align: left; vertical-align: top; font-weight: 400; font-size: 12px;
  line-height: 1.35; overflow-wrap: anywhere; padding: 2px 4px; }
#grid table.av-cells th.av-label b { font-size: 13px; }
#grid table.av-cells td { padding: 0; vertical-align: top; }
#grid table.av-cells td img { width: 100%; height: auto; display: block; cursor: zoom-in; }
#grid td .av-cell-title { display: none; }
#grid .av-grid.actual-size .av-scroll { overflow-x: auto; }
#grid .av-grid.actual-size table.av-cells { width: auto; table-layout: auto; }
#grid .av-grid.actual-size table.av-cells td img { width: auto; max-width: none; cursor: zoom-out; }
#grid .av-legend { font-size: 12px; color: var(--body-text-color); margin: 6px 4px; }
#grid .av-legend ul { margin: 2px 0 0 18px; padding: 0; }
#grid .av-legend img { float: right; margin-left: 8px; }
.av-table { width: 100%; border-collapse: collapse; font-size: 13px; }
.av-table th, .av-table td { border-bottom: 1px solid var(--border-color-primary); padding: 4px 6px;
  text-align: left; vertical-align: top; }
.av-table caption { text-align: left; font-weight: 600; padding: 4px 0; caption-side: top; }
@media (max-width: NARROWpx) {
  #grid table.av-cells, #grid table.av-cells tbody { display: block; width: 100%; }
  #grid table.av-cells thead, #grid table.av-cells colgroup { display: none; }
  #grid table.av-cells tr { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px;
    margin: 0 0 14px 0; padding: 6px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
  #grid table.av-cells th.av-label { grid-column: 1 / -1; display: block; }
  #grid table.av-cells td { display: block; }
  #grid td .av-cell-title { display: block; font-size: 11px; line-height: 1.3; margin-bottom: 2px; }
  /* tables: one block per row, each value under its column name */
  .av-table thead { display: none; }
  .av-table caption { display: block; width: 100%; }
  .av-table, .av-table tbody, .av-table tr, .av-table td { display: block; width: 100%; }
  .av-table tr { border-bottom: 1px solid var(--border-color-primary); padding: 4px 0; }
  .av-table td { border: none; padding: 1px 4px; }
  .av-table td::before { content: attr(data-label) ": "; font-weight: 600; }
}
""".replace("NARROW", str(NARROW_PX)).replace("ROW_MIN", str(DISAGREE_ROW_MIN_PX)).replace(
    "ROW_RATIO", DISAGREE_ROW_RATIO)

DARK_JS = "() => document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')"

# The answer arrived: bring the results into view (the settings above them can fill a screen).
# A refusal (#run-message shown) keeps the page where it is.
SHOW_RESULTS_JS = """() => { const s = document.querySelector('#results');
  const m = document.querySelector('#run-message');
  if (m && m.offsetParent !== null && m.innerText.trim()) return;
  if (s && s.offsetParent !== null) s.scrollIntoView({block: 'start'}); }"""

# A "where they disagree" picture opened on the Compare tab: the page goes to the top of the tabs, where the image
# and Compare are (the Data set tab's results are far down the page).
OPEN_ON_COMPARE_JS = """() => { const t = document.querySelector('#tabs');
  if (t) t.scrollIntoView({block: 'start'}); }"""

# Clicking a picture of the grid toggles 1:1 size (the grid is otherwise scaled to the frame) — only where 1:1 is
# larger than the fitted size (in a wide frame it would shrink the grid), and the clicked picture stays where it
# was on screen (the page does not jump).
GRID_ZOOM_JS = """element.addEventListener('click', (e) => {
  const img = e.target; if (img.tagName !== 'IMG') return;
  const g = element.querySelector('.av-grid'); if (!g) return;
  const zoomed = g.classList.contains('actual-size');
  if (!zoomed && img.naturalWidth <= img.clientWidth + 1) return;
  const before = img.getBoundingClientRect().top;
  g.classList.toggle('actual-size');
  window.scrollBy(0, img.getBoundingClientRect().top - before); });"""
