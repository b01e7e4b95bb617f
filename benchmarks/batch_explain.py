"""Benchmark: `attnviz explain DIR` — the one-image path vs the batched command vs 2 torchrun ranks, in one run.

The script writes a folder of ``--n`` benchmark scenes (PNG, 128 px, a mask beside every fourth) and explains it
with ``--models`` (default: the page's five bundled models) and Grad-CAM + Grad-CAM++ three ways:

  one-image   ``pipeline.run`` per image — what the page does and what `attnviz explain DIR` did before it was
              batched (one compare() per image, files written as the command writes them);
  batched     ``attnviz.app.batch.explain_paths`` in this process: DataLoader workers decode, ``--batch-size``
              images per model pass;
  torchrun    ``python -m torch.distributed.run --nproc-per-node R -m attnviz explain ...`` (``--ranks``, default
              2; gloo and one torch thread per rank on the CPU, NCCL and one GPU per rank with ``--device cuda``);
              its images/s are the command's own figure for its loop (rank 0's summary line), the wall time with
              start-up (imports, model loading) is printed beside it.

The three output CSVs are checked equal (``--tol``, default 1e-6: the CSVs round probabilities to 6 decimals)
before the numbers are printed.

Run:  python benchmarks/batch_explain.py [--n 256] [--batch-size 16] [--threads 2] [--device cpu] [--ranks 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnviz.app import pipeline  # noqa: E402
from attnviz.app.batch import CSV_SCORE_COLUMNS, collect_inputs, explain_paths, mask_beside, png_bytes  # noqa: E402
from attnviz.app.report import CSV_PREDICTION_COLUMNS, write_csv  # noqa: E402
from attnviz.data import synth  # noqa: E402

DEFAULT_MODELS = "baseline,se,cbam,triplet,coord"
METHODS = ["gradcam", "gradcam++"]


def write_scenes(folder: Path, n: int) -> None:
    scenes = synth.generate(n, seed=2468, workers=1)
    for i in range(n):
        cv2.imwrite(str(folder / f"scene{i:04d}.png"), cv2.cvtColor(scenes.images[i], cv2.COLOR_RGB2BGR))
        if i % 4 == 0:
            cv2.imwrite(str(folder / f"scene{i:04d}_mask.png"), scenes.masks[i].astype(np.uint8) * 255)


def one_image_path(folder: Path, out: Path, models: list[str], device: str) -> None:
    """The pre-batch command: one pipeline.run (one compare()) per image, the same files."""
    out.mkdir(parents=True)
    inputs, _ = collect_inputs([str(folder)])
    predictions, scores = [], []
    for path in inputs:
        r = pipeline.run(pipeline.Request(image=path, models=models, methods=METHODS, mask=mask_beside(path),
                                          source=str(path), device=device))
        (out / f"{path.stem}_grid.png").write_bytes(png_bytes(r.grid))
        (out / f"{path.stem}.json").write_text(json.dumps(r.report, indent=2))
        predictions += [{**row, "image": str(path)} for row in r.predictions]
        scores += [{"image": str(path), "model": m, "map": k, **s}
                   for m, per in r.scores.items() for k, s in per.items()]
    write_csv(out / "predictions.csv", predictions, CSV_PREDICTION_COLUMNS)
    write_csv(out / "scores.csv", scores, CSV_SCORE_COLUMNS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_csv(a: Path, b: Path) -> float:
    """Largest numeric difference between two CSVs with the same rows and text fields (raises otherwise)."""
    with open(a) as fa, open(b) as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    if len(ra) != len(rb):
        raise AssertionError(f"{a} has {len(ra)} rows, {b} has {len(rb)}")
    worst = 0.0
    for x, y in zip(ra, rb):
        for k in x:
            try:
                worst = max(worst, abs(float(x[k]) - float(y[k])))
            except ValueError:
                if x[k] != y[k]:
                    raise AssertionError(f"{a} vs {b}: {k} {x[k]!r} != {y[k]!r}") from None
    return worst


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "no GPU used"
    print(f"# torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, device {args.device}; "
          f"{args.threads} torch threads in one process (1 per torchrun rank); {args.n} images x {len(models)} "
          f"models ({', '.join(models)}), {' + '.join(METHODS)}, batch size {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="attnviz-bench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        t = time.perf_counter()
        write_scenes(folder, args.n)
        print(f"# wrote {args.n} scenes in {time.perf_counter() - t:.0f} s")
        rates: dict[str, float] = {}
        notes: dict[str, str] = {}

        pipeline.run(pipeline.Request(image=next(folder.glob("*.png")), models=models, methods=METHODS,
                                      device=args.device))  # warm-up: models loaded on the device
        before = load()
        t = time.perf_counter()
        one_image_path(folder, Path(tmp) / "one", models, args.device)
        rates["one-image path"] = args.n / (time.perf_counter() - t)
        notes["one-image path"] = f"{time.perf_counter() - t:.0f} s; {before} before"

        before = load()
        t = time.perf_counter()
        explain_paths([str(folder)], Path(tmp) / "batched", models, METHODS, progress=False,
                      batch_size=args.batch_size, device=args.device)
        rates["batched"] = args.n / (time.perf_counter() - t)
        notes["batched"] = f"{time.perf_counter() - t:.0f} s; {before} before"

        before = load()
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks),
                              "--master-port", str(free_port()), "-m", "attnviz", "explain", str(folder),
                              "--models", ",".join(models), "--methods", ",".join(METHODS), "--batch-size",
                              str(args.batch_size), "--device", args.device, "--out", str(Path(tmp) / "torchrun"),
                              "--quiet"],
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        wall = time.perf_counter() - t
        found = re.search(r"processed in ([\d.]+) s \(([\d.]+) images/s\)", run.stderr + run.stdout)
        if run.returncode != 0 or not found:
            raise SystemExit(f"torchrun failed ({run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}")
        ranks = f"torchrun, {args.ranks} rank{'s' if args.ranks > 1 else ''}"
        rates[ranks] = float(found.group(2))
        notes[ranks] = (f"{float(found.group(1)):.0f} s in the loop, {wall:.0f} s wall with start-up "
                        f"({args.n / wall:.2f} images/s); {before} before")

        worst = max(same_csv(Path(tmp) / mode / name, Path(tmp) / "one" / name)
                    for mode in ("batched", "torchrun") for name in ("predictions.csv", "scores.csv"))
        if worst > args.tol + 1e-12:  # a rounded last digit that flips is exactly the tolerance
            raise SystemExit(f"the runs' CSVs differ by {worst:.1e} (> --tol {args.tol:.0e})")
        print(f"# the three runs' CSVs agree (largest difference {worst:.1e}); {load()} at the end\n")
        base = rates["one-image path"]
        print("| mode | images/s | vs one-image path | notes |")
        print("|---|---|---|---|")
        for mode, rate in rates.items():
            print(f"| {mode} | {rate:.2f} | {rate / base:.2f}× | {notes[mode]} |")


if __name__ == "__main__":
    main()
