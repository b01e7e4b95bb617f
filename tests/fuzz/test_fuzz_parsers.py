"""Property tests: whatever bytes a user sends, each parser ends in a result or the project's own error type.

Never another exception, never a hang (each call is cut off after HANG_S of CPU time, so a busy machine does not
count as a hang, with an exception the parsers cannot swallow), never unbounded memory (the process's peak RSS may grow by at most MEMORY_GROWTH_MB during a run).
Parsers: decode_image, the checkpoint reader (read_checkpoint, read_class_names), parse_voc (+ boxes_mask),
a data set's mask files (datasets._read_mask_file), read_models_file, and the data-set archive reader
(extract_archive: also nothing written outside its folder).

The default suite runs FUZZ_EXAMPLES per parser, derandomized (seconds, the same inputs every time); the long
run is ``ATTNVIZ_FUZZ_EXAMPLES=5000 pytest tests/fuzz -p no:randomly`` (random inputs; counts are written to
test-output/fuzz_counts.json). Every crash found is kept as a regression input in tests/fuzz/regressions/.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import OUTPUT_DIR, PROJECT_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import archive_bytes, checkpoint_bytes, image_bytes, models_file_bytes, voc_bytes

from attnviz.data.archive import extract_archive
from attnviz.data.datasets import _read_mask_file, boxes_mask, parse_voc
from attnviz.data.images import MAX_SIDE, decode_image
from attnviz.errors import CheckpointError, DatasetError, ImageDecodeError, ModelsFileError
from attnviz.zoo.checkpoints import read_class_names
from attnviz.zoo.files import CHECKPOINT_SUFFIXES, read_checkpoint
from attnviz.zoo.modelsfile import read_models_file

FUZZ_EXAMPLES = int(os.environ.get("ATTNVIZ_FUZZ_EXAMPLES", "60"))
LONG_RUN = "ATTNVIZ_FUZZ_EXAMPLES" in os.environ
HANG_S = 20.0   # CPU seconds (the process's user time, all threads): no parser needs a tenth of it
MEMORY_GROWTH_MB = 1024
REGRESSIONS = Path(__file__).parent / "regressions"
TRIED: Counter = Counter()
FAILED: Counter = Counter()

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])   # memory_bound spans the whole run


class Hang(BaseException):
    """A parser ran past HANG_S of CPU (BaseException: an ``except Exception`` inside a parser cannot hide it)."""


def _alarm(signum, frame):
    raise Hang(f"no answer within {HANG_S} CPU seconds")


@contextlib.contextmanager
def bounded(parser: str):
    """Count the input, cut a hang off, and count anything that escapes as a failure (then re-raise)."""
    TRIED[parser] += 1
    previous = signal.signal(signal.SIGVTALRM, _alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, HANG_S)
    try:
        yield
    except BaseException:
        FAILED[parser] += 1
        raise
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module", autouse=True)
def counts():
    yield
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    record = {"examples_per_parser_setting": FUZZ_EXAMPLES, "random": LONG_RUN, "tried": dict(TRIED),
              "unhandled": dict(FAILED)}
    (OUTPUT_DIR / "fuzz_counts.json").write_text(json.dumps(record, indent=2) + "\n")


@pytest.fixture()
def memory_bound():
    before = _peak_rss_mb()
    yield
    assert _peak_rss_mb() - before <= MEMORY_GROWTH_MB, f"peak RSS grew {_peak_rss_mb() - before:.0f} MB"


@pytest.fixture(scope="module")
def workdir():
    """One folder for the module (hypothesis reuses it across examples): a models file's neighbours."""
    folder = Path(tempfile.mkdtemp(prefix="attnviz-fuzz-"))
    shutil.copy(PROJECT_ROOT / "models" / "weights" / "baseline.safetensors", folder / "good.safetensors")
    (folder / "garbage.pth").write_bytes(b"\x80\x02}q\x00." + os.urandom(64))
    (folder / "classes.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    (folder / "classes.json").write_text(json.dumps([f"c{i}" for i in range(10)]))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ---- the properties, one function per parser, shared by the fuzz runs and the regression inputs ------------

def check_decode_image(data: bytes) -> None:
    with bounded("decode_image"):
        try:
            image = decode_image(data)
        except ImageDecodeError:
            return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and max(image.shape) <= MAX_SIDE


def check_checkpoint(data: bytes, folder: Path, suffix: str) -> None:
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    with bounded("read_checkpoint"):
        try:
            state = read_checkpoint(path)
        except CheckpointError:
            return
    assert isinstance(state, dict) and state


def check_class_names(data: bytes, folder: Path, suffix: str, count: int) -> None:
    path = folder / f"classes{suffix}"
    path.write_bytes(data)
    with bounded("read_class_names"):
        try:
            names = read_class_names(path, count)
        except CheckpointError:
            return
    assert names is None or (len(names) == count and all(isinstance(n, str) for n in names))


def check_voc(data: bytes, shape: tuple[int, int]) -> None:
    with bounded("parse_voc"):
        try:
            annotation = parse_voc(data, "fuzz.xml")
            mask = boxes_mask(annotation, shape, "fuzz.xml")
        except DatasetError:
            return
    assert mask.shape == shape and mask.dtype == bool


def check_mask_file(data: bytes, folder: Path, shape: tuple[int, int]) -> None:
    path = folder / "fuzz_mask.png"
    path.write_bytes(data)
    with bounded("dataset_mask"):
        try:
            mask = _read_mask_file(path, shape)
        except DatasetError:
            return
    assert mask.shape == shape and mask.dtype == bool


def check_models_file(data: bytes, folder: Path) -> None:
    path = folder / "models.toml"
    path.write_bytes(data)
    with bounded("read_models_file"):
        try:
            specs = read_models_file(path)
        except ModelsFileError:
            return
    assert specs and all(spec.name for spec in specs)


def check_archive(data: bytes, folder: Path) -> None:
    """Unpack into a fresh job folder: a result or a DatasetError, and no file anywhere but under ``dest``."""
    job = Path(tempfile.mkdtemp(prefix="job-", dir=folder))
    try:
        archive, dest = job / "upload.zip", job / "unpacked" / "data"
        archive.write_bytes(data)
        with bounded("extract_archive"):
            try:
                extract_archive(archive, dest)
            except DatasetError:
                pass
        outside = [p for p in folder.rglob("*") if p.is_file() and p != archive and not p.is_relative_to(dest)
                   and p.parent != folder]
        assert outside == [], outside
    finally:
        shutil.rmtree(job, ignore_errors=True)


# ---- fuzz runs -----------------------------------------------------------------------------------------------

@FUZZ
@given(data=image_bytes())
def test_decode_image_fuzz(data, memory_bound):
    check_decode_image(data)


@FUZZ
@given(data=checkpoint_bytes(), suffix=st.sampled_from(CHECKPOINT_SUFFIXES))
def test_read_checkpoint_fuzz(data, suffix, workdir, memory_bound):
    check_checkpoint(data, workdir, suffix)


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode)),
    suffix=st.sampled_from((".txt", ".json", "")),
    count=st.integers(1, 12))
def test_read_class_names_fuzz(data, suffix, count, workdir, memory_bound):
    check_class_names(data, workdir, suffix, count)


@FUZZ
@given(data=voc_bytes(), shape=st.tuples(
    st.integers(1, 64), st.integers(1, 64)))
def test_parse_voc_fuzz(data, shape, memory_bound):
    check_voc(data, shape)


@FUZZ
@given(data=image_bytes(), shape=st.tuples(st.integers(1, 64), st.integers(1, 64)))
def test_dataset_mask_fuzz(data, shape, workdir, memory_bound):
    check_mask_file(data, workdir, shape)


@FUZZ
@given(data=models_file_bytes())
def test_read_models_file_fuzz(data, workdir, memory_bound):
    check_models_file(data, workdir)


@FUZZ
@given(data=archive_bytes())
def test_extract_archive_fuzz(data, workdir, memory_bound):
    check_archive(data, workdir)


# ---- every crash found, kept -----------------------------------------------------------------------------------

def _regressions() -> list[tuple[str, Path]]:
    """(parser, input file) for every file under regressions/<parser>/."""
    return [(folder.name, path) for folder in sorted(REGRESSIONS.iterdir()) if folder.is_dir()
            for path in sorted(folder.iterdir())]


@pytest.mark.parametrize("parser, path", _regressions(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_regression_inputs(parser, path, workdir):
    data = path.read_bytes()
    if parser == "decode_image":
        check_decode_image(data)
    elif parser == "read_checkpoint":
        check_checkpoint(data, workdir, path.suffix if path.suffix in CHECKPOINT_SUFFIXES else ".pth")
    elif parser == "parse_voc":
        check_voc(data, (32, 48))
    elif parser == "read_models_file":
        check_models_file(data, workdir)
    elif parser == "extract_archive":
        check_archive(data, workdir)
    else:
        pytest.fail(f"regressions/{parser}/: no such parser here")
