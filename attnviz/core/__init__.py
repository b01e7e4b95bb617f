"""Core layer: the method catalogue, model specs, devices, layer taps, CAM formulas, attention recording and the
batched engine that runs them on one loaded model."""
