# attnviz web page; CPU-only PyTorch by default, CUDA with one build argument.
#   docker build -t attnviz .
#   docker run --rm -p 7860:7860 attnviz
# Your own models (README "Your own models on the page"): mount a folder with models.toml and the weights,
#   docker run --rm -p 7860:7860 -v "$PWD/lab:/lab:ro" -e ATTNVIZ_MODELS_FILE=/lab/models.toml attnviz
# GPU image (same torch version, CUDA wheels; the host needs the NVIDIA container toolkit):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 -t attnviz:cuda .
#   docker run --rm --gpus all -e ATTNVIZ_DEVICE=cuda -p 7860:7860 attnviz:cuda
# The install step is the README's install command, verbatim; the only difference is the package index:
# PIP_INDEX_URL points pip at PyTorch's wheels for TORCH_INDEX (same pinned versions), PyPI for the rest.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_INDEX_URL=${TORCH_INDEX} \
    PIP_EXTRA_INDEX_URL=https://pypi.org/simple \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_TEMP_DIR=/tmp/attnviz/gradio \
    ATTNVIZ_TMP=/tmp/attnviz \
    ATTNVIZ_DEVICE=auto \
    MPLCONFIGDIR=/tmp/attnviz/matplotlib

RUN useradd --create-home --uid 10001 attnviz
WORKDIR /app
COPY --chown=attnviz:attnviz . /app

# Seconds, not minutes of pip retries, when TORCH_INDEX cannot be reached or lacks the pinned torch (one line
# says which); then the README install step (README.md "Install and run"); then which torch the image got
# (+cpu / +cuXXX), printed and kept in /app/TORCH_BUILD: a +cpu index that delivered another build fails here.
RUN python3 docker/torch_build.py check "$TORCH_INDEX"
RUN python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
RUN .venv/bin/python docker/torch_build.py record "$TORCH_INDEX"

# Optional: bake ImageNet weights into the image (docs/checkpoints.md), e.g.
#   docker build --build-arg IMAGENET_WEIGHTS=imagenet -t attnviz .
#   docker build --build-arg "IMAGENET_WEIGHTS=tv-resnet50 timm-seresnet50" -t attnviz .
ARG IMAGENET_WEIGHTS=""
ENV ATTNVIZ_WEIGHTS_DIR=/app/weights
RUN if [ -n "$IMAGENET_WEIGHTS" ]; then .venv/bin/attnviz weights download $IMAGENET_WEIGHTS; fi

USER 10001
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
CMD ["/app/.venv/bin/python", "app.py"]
