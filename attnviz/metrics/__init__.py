"""Metrics layer: pure scoring functions (localisation, faithfulness, agreement between maps)."""
