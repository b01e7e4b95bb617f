#!/usr/bin/env bash
# `attnviz explain` on a CUDA machine, in one go: CPU vs CUDA vs CUDA --amp maps, torchrun over NCCL, the
# one-GPU-per-process check, then benchmarks/batch_explain.py on the GPU. Needs the project's requirements
# (grad-cam, ttach among them) and one CUDA device. Run from the repository root:  bash benchmarks/gpu_explain.sh
set -u
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
nvidia-smi -L; nproc; uptime
$PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0))"
$PY - "$WORK/in" <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from batch_explain import write_scenes
p = Path(sys.argv[1]); p.mkdir(); write_scenes(p, 16)
PY
M="--models baseline,se,cbam,triplet,coord --methods gradcam,gradcam++,layercam,eigencam --npz --quiet"
for run in "cpu" "cuda" "cuda --amp"; do
  t=$SECONDS
  $PY -m attnviz explain "$WORK/in" $M --device $run --out "$WORK/o_${run// /_}"
  echo "explain --device $run: rc=$? $((SECONDS - t)) s"
done
$PY -m torch.distributed.run --nproc-per-node 1 -m attnviz explain "$WORK/in" $M --device cuda --out "$WORK/o_tr"
echo "torchrun, 1 rank, NCCL: rc=$?"
# more processes than GPUs: one clear line from every rank, exit status 2
$PY -m torch.distributed.run --nproc-per-node "$(( $(nvidia-smi -L | wc -l) + 1 ))" -m attnviz explain "$WORK/in" $M \
    --device cuda --out "$WORK/o_tr2" 2>&1 | grep "attnviz: error" | sort -u
$PY - "$WORK" <<'PY'
import glob, os, sys
import numpy as np
work = sys.argv[1]
def worst(a, b):
    w, n = 0.0, 0
    for f in sorted(glob.glob(os.path.join(work, a, "*_maps.npz"))):
        with np.load(f) as x, np.load(os.path.join(work, b, os.path.basename(f))) as y:
            for k in x.files:
                if "/cam/" in k and k.endswith("/heatmap"):
                    w, n = max(w, float(np.abs(x[k] - y[k]).max())), n + 1
    return f"{w:.2e} over {n} maps"
print("heatmaps, cuda vs cpu:", worst("o_cuda", "o_cpu"))
print("heatmaps, cuda --amp vs cuda float32:", worst("o_cuda_--amp", "o_cuda"))
print("heatmaps, torchrun 1 rank (NCCL) vs one process, cuda:", worst("o_tr", "o_cuda"))
PY
$PY benchmarks/batch_explain.py --device cuda --ranks "$(nvidia-smi -L | wc -l)" --n 256 --batch-size 64 --tol 1e-4
rm -rf "$WORK"
uptime
