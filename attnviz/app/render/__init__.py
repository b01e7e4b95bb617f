"""Rendering: heatmap overlays, the side-by-side grid, attention maps, channel bars, colour bars, the box picker.

Pure functions from numpy arrays (and the plain result dataclasses) to RGB uint8 images, shared by the page,
the command line and reports. :mod:`.draw` holds the primitives, :mod:`.charts` the bar / profile / matrix
charts, :mod:`.attention` the attention maps, :mod:`.grid` the grid, :mod:`.picker` the object-box picker.
"""
from attnviz.app.render.attention import (
                                          GATE_LEGEND,
                                          attention_map_image,
                                          cam_peak,
                                          primary_attention,
                                          query_marker_image,
                                          stage_of_layer,
)
from attnviz.app.render.charts import bar_chart
from attnviz.app.render.draw import COLORMAPS, DARK, LIGHT, Palette, colorbar, colorize, overlay, text_image
from attnviz.app.render.grid import (
                                          GridCells,
                                          GridRow,
                                          bar_title,
                                          compose,
                                          grid,
                                          grid_cells,
                                          grid_shape,
                                          legend_lines,
                                          row_label,
                                          vs_baseline_column,
)
from attnviz.app.render.picker import mark_picker, picker_image

__all__ = ["COLORMAPS", "DARK", "GATE_LEGEND", "LIGHT", "GridCells", "GridRow", "Palette", "attention_map_image",
           "bar_chart", "bar_title", "cam_peak", "colorbar", "colorize", "compose", "grid", "grid_cells", "grid_shape",
           "legend_lines", "mark_picker", "overlay", "picker_image", "primary_attention", "query_marker_image",
           "row_label", "stage_of_layer", "text_image", "vs_baseline_column"]
