"""App layer: the command line, the batch command, the shared request pipeline, rendering and the web page."""
