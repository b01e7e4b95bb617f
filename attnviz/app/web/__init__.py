"""The Gradio page and its per-session state."""
