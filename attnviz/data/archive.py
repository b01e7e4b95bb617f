"""A user's data set as a ``.zip``: unpacked safely into a folder of its own, then read like ``--data DIR``.

The archive holds the layout :mod:`attnviz.data.datasets` reads (what ``attnviz synth export`` writes)::

    <class>/<stem>.png            an image (any of datasets.IMAGE_SUFFIXES); <class> names the true class
    <class>/<stem>_mask.png       optional object mask
    <class>/<stem>.xml            or optional Pascal VOC boxes

optionally wrapped in one top folder (what zipping a folder gives). The archive comes from a stranger, so
nothing in it is trusted: a member whose name leaves the target folder (``../``, an absolute path, a drive
letter), a symbolic link, a nested archive, an encrypted or unreadable member, or a file type the layout does
not use is skipped with one line saying why; an archive that declares or unpacks to more than the size cap,
or holds more members than the member cap, is refused whole and what was unpacked is removed. Files are
created with ``O_EXCL | O_NOFOLLOW`` below a folder this module made, so nothing is written anywhere else.
"""
from __future__ import annotations

import contextlib
import lzma
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from attnviz.data.datasets import IMAGE_SUFFIXES, MASK_SUFFIX, Skipped
from attnviz.data.images import MAX_UPLOAD_BYTES
from attnviz.errors import DatasetError

ARCHIVE_SUFFIX = ".zip"
NESTED_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
METADATA = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
USED_SUFFIXES = IMAGE_SUFFIXES + (".xml",)
MAX_DEPTH = 8                       # <wrapper>/<class>/<sub folders...>/<file>
_CHUNK = 1 << 20
# members whose reading can fail on a hostile archive: each becomes one skipped line, never a crash
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, NotImplementedError,
                RuntimeError)


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, str(default))))
    except ValueError:
        return default


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may hold. Operators set them with ``ATTNVIZ_ARCHIVE_MAX_MB`` (the compressed file and
    the unpacked total, default 512) and ``ATTNVIZ_ARCHIVE_MAX_FILES`` (members, default 20000)."""

    max_total_bytes: int = 512 * 1024 * 1024
    max_members: int = 20_000
    max_member_bytes: int = MAX_UPLOAD_BYTES      # one image is refused above this by the decoder anyway

    @classmethod
    def from_env(cls) -> "ArchiveLimits":
        return cls(max_total_bytes=_env_int("ATTNVIZ_ARCHIVE_MAX_MB", 512) * 1024 * 1024,
                   max_members=_env_int("ATTNVIZ_ARCHIVE_MAX_FILES", 20_000))


@dataclass(frozen=True)
class Extracted:
    """The unpacked data set: ``root`` holds the class folders; ``skipped`` says what was left out and why."""

    root: Path
    files: int
    bytes: int
    skipped: tuple[Skipped, ...]


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def member_problem(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    """Why a member is not unpacked (None: it is). Names are judged as written, backslashes as separators."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if "\x00" in name:
        return "a name with a NUL byte"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path (refused: it would leave the data set's folder)"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "a path with '..' (refused: it would leave the data set's folder)"
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if info.flag_bits & 0x1:
        return "an encrypted member"
    if any(p in METADATA or p.startswith("._") for p in parts):
        return "system metadata, not part of the data set"
    if not parts:
        return "an empty name"
    if len(parts) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} folders"
    lower = parts[-1].lower()
    if lower.endswith(NESTED_ARCHIVES):
        return "an archive inside the archive (nested archives are not opened)"
    if not lower.endswith(USED_SUFFIXES):
        kind = PurePosixPath(lower).suffix or "no extension"
        return f"unsupported file type ({kind}); the layout uses images, {MASK_SUFFIX} masks and VOC .xml files"
    if info.file_size > limits.max_member_bytes:
        return f"declares {_mb(info.file_size)} unpacked; one file may be at most {_mb(limits.max_member_bytes)}"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):   # 0: written without Unix file-type bits
        return "not a plain file"
    return None


def _open(archive: Path) -> zipfile.ZipFile:
    try:
        size = archive.stat().st_size
    except OSError as exc:
        raise DatasetError(f"{archive.name}: cannot be read ({exc.strerror or exc}).") from None
    try:
        return zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DatasetError(f"{archive.name}: not a zip archive ({size:,} bytes); upload a .zip of "
                           "<class>/<image> folders.") from None
    except _READ_ERRORS as exc:
        raise DatasetError(f"{archive.name}: the zip archive cannot be read ({exc}).") from None


def _check_totals(archive: Path, members: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Refuse the whole archive on what its directory declares, before a byte is unpacked."""
    if archive.stat().st_size > limits.max_total_bytes:
        raise DatasetError(f"{archive.name}: the archive is larger than {_mb(limits.max_total_bytes)}.")
    if len(members) > limits.max_members:
        raise DatasetError(f"{archive.name}: {len(members):,} members; an archive may hold at most "
                           f"{limits.max_members:,} (refused, nothing unpacked).")
    declared = sum(max(0, m.file_size) for m in members)
    if declared > limits.max_total_bytes:
        raise DatasetError(f"{archive.name}: declares {_mb(declared)} unpacked, over the "
                           f"{_mb(limits.max_total_bytes)} limit (a decompression bomb?); nothing unpacked.")


def _target(dest: Path, info: zipfile.ZipInfo) -> Path:
    parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
    target = dest.joinpath(*parts)
    if os.path.commonpath([dest, os.path.abspath(target)]) != str(dest):   # belt and braces after the name check
        raise DatasetError(f"{info.filename}: leaves the data set's folder.")
    return target


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: ArchiveLimits,
                 ) -> int:
    """Unpack one member, counting real bytes: more than it declared, or than ``budget``, stops the archive."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > min(budget, limits.max_member_bytes, max(info.file_size, 0)):
                raise _Bomb(f"{info.filename}: unpacks to more than it declares or the "
                            f"{_mb(limits.max_total_bytes)} limit allows (a decompression bomb?)")
            out.write(chunk)
    return written


class _Bomb(Exception):
    pass


def data_root(dest: Path) -> Path:
    """``dest``, or its single top folder when that holds only folders (a zipped ``export/`` folder)."""
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        inner = list(entries[0].iterdir())
        if inner and all(e.is_dir() for e in inner):
            return entries[0]
    return dest


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike,
                    limits: ArchiveLimits | None = None) -> Extracted:
    """Unpack ``archive`` into the new or empty folder ``dest``; see the module docstring for what is refused.

    Raises :class:`DatasetError` when the archive as a whole is refused (not a zip, over a cap, nothing usable);
    ``dest`` is then left empty.
    """
    archive, dest = Path(archive), Path(os.path.abspath(dest))
    limits = limits or ArchiveLimits.from_env()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise DatasetError(f"{dest} is not empty; an archive is unpacked into a folder of its own.")
    with _open(archive) as zf:
        try:
            members = zf.infolist()
        except _READ_ERRORS as exc:
            raise DatasetError(f"{archive.name}: the zip directory cannot be read ({exc}).") from None
        _check_totals(archive, members, limits)
        skipped: list[Skipped] = []
        seen: set[str] = set()
        files = total = 0
        try:
            for info in members:
                if info.filename.endswith("/"):   # a folder entry (ZipInfo.is_dir() fails on an empty name)
                    continue
                problem = member_problem(info, limits)
                key = info.filename.replace("\\", "/").lower()
                if problem is None and key in seen:
                    problem = "a second member of the same name"
                if problem is not None:
                    skipped.append(Skipped(Path(info.filename), problem))
                    continue
                seen.add(key)
                target = _target(dest, info)
                try:
                    total += _copy_member(zf, info, target, limits.max_total_bytes - total, limits)
                    files += 1
                except _READ_ERRORS as exc:
                    with contextlib.suppress(OSError):
                        target.unlink(missing_ok=True)
                    skipped.append(Skipped(Path(info.filename), f"cannot be unpacked ({exc})"))
        except _Bomb as exc:
            _empty(dest)
            raise DatasetError(f"{archive.name}: {exc}; refused, nothing kept.") from None
    if files == 0:
        _empty(dest)
        why = f" ({len(skipped)} members skipped, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DatasetError(f"{archive.name}: no image to use{why}; the layout is <class>/<image> with "
                           f"<stem>{MASK_SUFFIX} or <stem>.xml beside each image.")
    return Extracted(data_root(dest), files, total, tuple(skipped))


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
