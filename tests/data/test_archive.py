"""A user's .zip data set: what is unpacked, what is skipped with one line, what is refused whole — and that
nothing is ever written outside the folder it is unpacked into."""
from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnviz.data.archive import ArchiveLimits, extract_archive
from attnviz.data.datasets import read_dataset
from attnviz.errors import AttnvizError, DatasetError


def png(value: int = 128, size: int = 8, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes], **kwargs) -> Path:
    with zipfile.ZipFile(path, "w", compression=kwargs.get("compression", zipfile.ZIP_DEFLATED)) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def good_members(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}circle/a.png": png(), f"{prefix}circle/a_mask.png": png(255, mode="L"),
            f"{prefix}square/b.png": png(60), f"{prefix}square/b_mask.png": png(255, mode="L")}


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    """(where archives are written, the job folder they are unpacked into): a sibling folder catches escapes."""
    (tmp_path / "uploads").mkdir()
    return tmp_path / "uploads", tmp_path / "job" / "data"


def assert_nothing_outside(tmp_path: Path) -> None:
    outside = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
               if p.is_file() and not p.is_relative_to(tmp_path / "job") and not p.is_relative_to(tmp_path / "uploads")}
    assert outside == set()


def test_exported_layout_unpacks_and_lists(job, tmp_path):
    uploads, dest = job
    done = extract_archive(make_zip(uploads / "set.zip", good_members()), dest)
    assert done.files == 4 and done.skipped == ()
    listing = read_dataset(done.root, ["circle", "square"])
    assert [(i.path.name, i.label, i.truth) for i in listing.items] == [("a.png", 0, "mask"), ("b.png", 1, "mask")]


def test_a_single_wrapper_folder_is_the_root(job):
    uploads, dest = job
    done = extract_archive(make_zip(uploads / "set.zip", good_members("export/")), dest)
    assert done.root == dest / "export"
    assert {f.name for f in read_dataset(done.root, ["circle", "square"]).folders} == {"circle", "square"}


@pytest.mark.parametrize("name, why", [
    ("../evil.png", "'..'"),
    ("circle/../../evil.png", "'..'"),
    ("..\\evil.png", "'..'"),
    ("/tmp/evil.png", "absolute path"),
    ("C:/evil.png", "absolute path"),
])
def test_names_that_leave_the_folder_are_skipped(job, tmp_path, name, why):
    uploads, dest = job
    members = good_members() | {name: png()}
    done = extract_archive(make_zip(uploads / "set.zip", members), dest)
    assert [s.reason for s in done.skipped if str(s.path) == name][0].count(why) == 1
    assert done.files == 4
    assert_nothing_outside(tmp_path)
    assert not Path("/tmp/evil.png").exists() or Path("/tmp/evil.png").stat().st_size != len(png())


def test_a_symlink_member_is_skipped(job, tmp_path):
    uploads, dest = job
    path = make_zip(uploads / "set.zip", good_members())
    with zipfile.ZipFile(path, "a") as zf:
        link = zipfile.ZipInfo("circle/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    done = extract_archive(path, dest)
    assert [s.reason for s in done.skipped] == ["a symbolic link (not followed)"]
    assert not (dest / "circle" / "link.png").exists() and not (dest / "circle" / "link.png").is_symlink()
    assert_nothing_outside(tmp_path)


def test_a_nested_zip_is_skipped(job):
    uploads, dest = job
    inner = make_zip(uploads / "inner.zip", good_members()).read_bytes()
    done = extract_archive(make_zip(uploads / "set.zip", good_members() | {"circle/more.zip": inner}), dest)
    assert len(done.skipped) == 1 and "nested archives are not opened" in done.skipped[0].reason
    assert "circle/more.zip" not in files_under(dest)


def test_unsupported_and_unreadable_members_are_skipped(job):
    uploads, dest = job
    path = make_zip(uploads / "set.zip", good_members() | {"circle/notes.txt": b"hello", "circle/run.exe": b"MZ"})
    data = bytearray(path.read_bytes())
    done = extract_archive(path, dest)
    reasons = {str(s.path): s.reason for s in done.skipped}
    assert set(reasons) == {"circle/notes.txt", "circle/run.exe"}
    assert all("unsupported file type" in r for r in reasons.values())
    # a member whose compressed bytes are damaged: skipped with a reason, the rest still unpacked
    corrupt = make_zip(path.with_name("corrupt.zip"), good_members() | {"square/c.png": png(7) * 50})
    data = bytearray(corrupt.read_bytes())
    with zipfile.ZipFile(corrupt) as zf:
        info = zf.getinfo("square/c.png")
    start = info.header_offset + 30 + len(info.filename) + 5
    data[start:start + 20] = bytes(20)
    corrupt.write_bytes(bytes(data))
    done = extract_archive(corrupt, dest.with_name("second"))
    assert [str(s.path) for s in done.skipped] == ["square/c.png"]
    assert "cannot be unpacked" in done.skipped[0].reason
    assert done.files == 4


def test_declared_bomb_is_refused_whole(job):
    uploads, dest = job
    limits = ArchiveLimits(max_total_bytes=100_000, max_members=100, max_member_bytes=1_000_000)
    path = make_zip(uploads / "bomb.zip", good_members() | {"circle/big.png": bytes(200_000)})
    with pytest.raises(DatasetError, match="declares 0 MB unpacked, over the 0 MB limit") as err:
        extract_archive(path, dest, limits)
    assert "\n" not in str(err.value)
    assert files_under(dest) == set()


def test_a_member_over_the_per_file_cap_is_skipped(job):
    uploads, dest = job
    limits = ArchiveLimits(max_total_bytes=10_000_000, max_members=100, max_member_bytes=50_000)
    done = extract_archive(make_zip(uploads / "big.zip", good_members() | {"circle/big.png": bytes(60_000)}),
                           dest, limits)
    assert [str(s.path) for s in done.skipped] == ["circle/big.png"]
    assert "one file may be at most" in done.skipped[0].reason


def test_a_member_that_unpacks_to_more_than_it_declares_is_refused(job):
    uploads, dest = job
    path = make_zip(uploads / "liar.zip", good_members() | {"circle/z.png": bytes(5000)})
    # rewrite the declared size of the member in both headers to 10 bytes: the stream must stop there
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("circle/z.png")
    struct.pack_into("<I", data, info.header_offset + 22, 10)              # local header: uncompressed size
    central = data.find(b"PK\x01\x02" + data[info.header_offset + 4:info.header_offset + 6])
    while data[central + 46:central + 46 + len(info.filename)] != info.filename.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, 10)                          # central directory: the same
    path.write_bytes(bytes(data))
    try:
        done = extract_archive(path, dest)
    except DatasetError as exc:       # the size check caught it
        assert "decompression bomb" in str(exc) or "cannot" in str(exc)
        assert files_under(dest) == set()
    else:                             # zipfile itself refused the lying member: skipped, never written large
        assert [str(s.path) for s in done.skipped] == ["circle/z.png"]
        assert not (dest / "circle" / "z.png").exists()


def test_actual_bytes_over_the_total_cap_are_refused(job):
    uploads, dest = job
    limits = ArchiveLimits(max_total_bytes=30_000, max_members=100, max_member_bytes=1_000_000)
    members = {f"circle/{i}.png": bytes(9_000) for i in range(3)}
    path = make_zip(uploads / "many.zip", members)
    with zipfile.ZipFile(path) as zf:   # declares 27 kB: under the cap; the stream check is what is left
        assert sum(i.file_size for i in zf.infolist()) < limits.max_total_bytes
    done = extract_archive(path, dest, limits)
    assert done.files == 3
    limits = ArchiveLimits(max_total_bytes=20_000, max_members=100, max_member_bytes=1_000_000)
    with pytest.raises(DatasetError, match="decompression bomb"):
        extract_archive(path, dest.with_name("again"), limits)


def test_too_many_members_is_refused_whole(job):
    uploads, dest = job
    members = {f"circle/{i}.png": b"x" for i in range(30)}
    with pytest.raises(DatasetError, match="30 members; an archive may hold at most 20"):
        extract_archive(make_zip(uploads / "many.zip", members), dest,
                        ArchiveLimits(max_total_bytes=10_000_000, max_members=20))
    assert files_under(dest) == set()


def test_an_empty_archive_is_refused(job):
    uploads, dest = job
    with pytest.raises(DatasetError, match="no image to use"):
        extract_archive(make_zip(uploads / "empty.zip", {}), dest)
    with pytest.raises(DatasetError, match=r"no image to use \(1 members skipped, e.g. notes.txt"):
        extract_archive(make_zip(uploads / "text.zip", {"notes.txt": b"hi"}), dest.with_name("b"))


def test_not_a_zip_is_one_line(job):
    uploads, dest = job
    path = uploads / "fake.zip"
    path.write_bytes(b"this is not a zip at all")
    with pytest.raises(DatasetError, match="not a zip archive") as err:
        extract_archive(path, dest)
    assert "\n" not in str(err.value)


def test_unmatched_class_folders_are_reported_by_the_listing(job):
    uploads, dest = job
    done = extract_archive(make_zip(uploads / "set.zip", good_members() | {"dragon/x.png": png()}), dest)
    listing = read_dataset(done.root, ["circle", "square"])
    assert [(f.name, f.label is None) for f in listing.folders] == [
        ("circle", False), ("dragon", True), ("square", False)]
    assert "no class named 'dragon'" in listing.unmatched[0].reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_end_in_a_result_or_a_dataset_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "x.zip"
    path.write_bytes(data)
    try:
        extract_archive(path, folder / "out")
    except AttnvizError:
        pass


_names = st.text(alphabet=st.sampled_from("ab./\\:_-.\x00"), min_size=1, max_size=12) | st.sampled_from(
    ["../a.png", "/a.png", "a/../../b.png", "c/a.png", "c/a_mask.png", "c/x.zip", "c\\a.png", "C:/a.png"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.dictionaries(_names, st.binary(max_size=64), max_size=6), flip=st.integers(0, 4000))
def test_random_zips_end_in_a_result_or_a_dataset_error_and_stay_inside(tmp_path_factory, members, flip):
    folder = tmp_path_factory.mktemp("fuzz")
    try:
        path = make_zip(folder / "x.zip", members)
    except (ValueError, IndexError):   # zipfile cannot even write some of these names
        assume(False)
    data = bytearray(path.read_bytes())
    if data:
        data[flip % len(data)] ^= 0xFF          # one damaged byte somewhere: header, data or directory
        path.write_bytes(bytes(data))
    dest = folder / "job" / "out"
    try:
        extract_archive(path, dest)
    except AttnvizError:
        pass
    escaped = [p for p in folder.rglob("*") if p.is_file() and p != path and not p.is_relative_to(dest)]
    assert escaped == []
