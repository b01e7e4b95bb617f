"""One comparison with the whole bundled zoo: how long the page's largest ordinary request takes.

The page's model limit (``ATTNVIZ_MAX_MODELS``) is set from this measurement. Runs the request path the
page and the API share (``pipeline.run``: decode, compare, render the grid, score, report) with every
bundled model and Grad-CAM + Grad-CAM++ on a benchmark scene and on a photo-sized image: once cold (each
model built and loaded on first use) and then ``--repeats`` times warm.

Run:  python benchmarks/compare_all.py [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from attnviz.app import pipeline
    from attnviz.data.examples import EXAMPLES_DIR
    from attnviz.zoo import registry as zoo

    names = zoo.bundled()
    scene = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]
    photo = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    print(f"{len(names)} bundled models: {', '.join(names)}; torch {torch.__version__}, {args.threads} threads")
    for label, image in (("benchmark scene 128 px", scene), ("photo-sized 1024x768", photo)):
        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            result = pipeline.run(pipeline.Request(image=image, models=names, methods=("gradcam", "gradcam++")))
            times.append(time.perf_counter() - t0)
            assert len(result.comparison.explanations) == len(names)
        warm = times[1:]
        per_model = statistics.median(warm) / len(names)
        print(f"{label}: first {times[0]:.2f} s; warm median {statistics.median(warm):.2f} s "
              f"(min {min(warm):.2f}, max {max(warm):.2f}, n={len(warm)}); {per_model * 1000:.0f} ms per model")


if __name__ == "__main__":
    main()
