"""The file-root policy and ``open_allowed_file``, on real files (no database)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from django_taskqueue import files
from django_taskqueue.files import (
    MAX_PATH_LENGTH,
    FileNotAllowed,
    open_allowed_file,
    resolve_allowed_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """An allowed directory holding ``sub/doc.txt``; a secret outside it."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "doc.txt").write_text("public words\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    with override_settings(DJANGO_TASKQUEUE={"ALLOWED_FILE_ROOTS": [str(allowed)]}):
        yield allowed


def secret(root: Path) -> Path:
    return root.parent / "secret.txt"


# --- resolving, when a task is started ----------------------------------------------------


def test_resolve_describes_a_file_inside_the_roots(root: Path) -> None:
    (root / "alias.txt").symlink_to(root / "sub" / "doc.txt")  # a symlink inside is fine
    described = resolve_allowed_file(str(root / "alias.txt"))
    assert described == {
        "file_path": str(root / "sub" / "doc.txt"),
        "file_name": "doc.txt",
        "file_size": len("public words\n"),
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("sub/doc.txt", "not an absolute path"),
        ("{root}/../secret.txt", "outside"),
        ("/etc/hostname", "outside"),
        ("{root}/nope.txt", "does not exist"),
        ("{root}/sub", "not a regular file"),
        ("{root}/a\x00b", "NUL"),
        (5, "must be a string"),
    ],
)
def test_resolve_refuses_with_a_message(root: Path, path: Any, message: str) -> None:
    if isinstance(path, str):
        path = path.replace("{root}", str(root))
    with pytest.raises(ValidationError, match=message):
        resolve_allowed_file(path)


def test_an_overlong_path_is_refused_before_anything_is_resolved(root: Path) -> None:
    # 2 MB of "a/": os.path.realpath on it took minutes of CPU (one lstat per
    # component, each on a longer prefix).
    path = str(root) + "/" + "a/" * 1_000_000
    began = time.process_time()
    with pytest.raises(FileNotAllowed) as caught:
        resolve_allowed_file(path)
    assert time.process_time() - began < 0.5
    assert caught.value.code == "max_length"
    assert f"the limit is {MAX_PATH_LENGTH}" in str(caught.value)
    assert len(str(caught.value)) < 200  # the message does not repeat the path


def test_a_path_of_exactly_the_limit_is_accepted(root: Path) -> None:
    slashes = MAX_PATH_LENGTH - len(f"{root}sub/doc.txt")
    path = f"{root}{'/' * slashes}sub/doc.txt"  # repeated slashes name the same file
    assert len(path) == MAX_PATH_LENGTH
    assert resolve_allowed_file(path)["file_name"] == "doc.txt"
    with pytest.raises(FileNotAllowed, match="limit"):
        resolve_allowed_file("/" + path)


def test_a_file_name_that_is_not_utf8_is_refused(root: Path) -> None:
    raw = os.fsencode(str(root)) + b"/caf\xe9.txt"  # Latin-1 bytes, as an old upload may have
    Path(os.fsdecode(raw)).write_text("x")
    (name,) = [n for n in os.listdir(root) if n.startswith("caf")]
    assert name == "caf\udce9.txt"  # what os.listdir gives: a surrogate escape
    with pytest.raises(FileNotAllowed, match=r"not valid UTF-8 text \(U\+DCE9"):
        resolve_allowed_file(str(root / name))
    # The name the path resolves to is checked as well.
    (root / "plain.txt").symlink_to(root / name)
    with pytest.raises(FileNotAllowed, match="UTF-8"):
        resolve_allowed_file(str(root / "plain.txt"))


def test_a_lone_surrogate_from_json_is_refused(root: Path) -> None:
    with pytest.raises(FileNotAllowed, match="UTF-8"):
        resolve_allowed_file(f"{root}/\ud800.txt")


def test_no_roots_refuses_every_path(root: Path) -> None:
    with (
        override_settings(DJANGO_TASKQUEUE={"ALLOWED_FILE_ROOTS": []}),
        pytest.raises(FileNotAllowed, match="ALLOWED_FILE_ROOTS"),
    ):
        resolve_allowed_file(str(root / "sub" / "doc.txt"))


def test_a_refusal_reads_well_as_a_task_error() -> None:
    error = FileNotAllowed("'/x' is outside the allowed directories.", code="outside")
    assert str(error) == "'/x' is outside the allowed directories."
    assert isinstance(error, ValidationError)


# --- opening, when the task runs ----------------------------------------------------------


def test_open_reads_a_file_inside_the_roots(root: Path) -> None:
    path = str(root / "sub" / "doc.txt")
    with open_allowed_file(path) as handle:
        assert handle.read() == b"public words\n"
        assert handle.name == path
    with open_allowed_file(Path(path), "r", encoding="utf-8") as handle:
        assert handle.readline() == "public words\n"


def test_open_follows_a_symlink_that_stays_inside_the_roots(root: Path) -> None:
    (root / "alias.txt").symlink_to(root / "sub" / "doc.txt")
    with open_allowed_file(root / "alias.txt") as handle:
        assert handle.read() == b"public words\n"
        assert handle.name == str(root / "sub" / "doc.txt")


def test_a_file_swapped_for_a_symlink_after_the_check_is_refused(root: Path) -> None:
    """The TOCTOU of a task's file: the API checked it, then it became a symlink out."""
    path = resolve_allowed_file(str(root / "sub" / "doc.txt"))["file_path"]
    os.unlink(path)
    os.symlink(secret(root), path)
    with pytest.raises(FileNotAllowed, match="outside"):
        open_allowed_file(path)


def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(root: Path) -> None:
    path = resolve_allowed_file(str(root / "sub" / "doc.txt"))["file_path"]
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "doc.txt").write_text("TOP SECRET\n")
    (root / "sub").rename(root.parent / "old-sub")
    (root / "sub").symlink_to(elsewhere)
    with pytest.raises(FileNotAllowed, match="outside"):
        open_allowed_file(path)


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_a_swap_between_the_check_and_the_open_is_refused(
    root: Path, swap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself: the path resolved inside the roots, then changed before the open."""
    checked = files._resolve_inside_roots

    def check_then_swap(path: str) -> tuple[str, str]:
        result = checked(path)
        if swap == "file":
            os.unlink(root / "sub" / "doc.txt")
            os.symlink(secret(root), root / "sub" / "doc.txt")
        else:
            (root / "sub").rename(root.parent / "old-sub")
            elsewhere = root.parent / "elsewhere"
            elsewhere.mkdir()
            os.symlink(secret(root), elsewhere / "doc.txt")
            (root / "sub").symlink_to(elsewhere)
        return result

    monkeypatch.setattr(files, "_resolve_inside_roots", check_then_swap)
    with pytest.raises(FileNotAllowed, match="changed after it was checked"):
        open_allowed_file(root / "sub" / "doc.txt")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("{root}/../secret.txt", "outside"),
        ("{root}/sub/../../secret.txt", "outside"),
        ("sub/doc.txt", "not an absolute path"),
        ("{root}/sub", "not a regular file"),
        ("{root}", "not a regular file"),
    ],
)
def test_open_refuses_what_leaves_the_roots(root: Path, path: str, message: str) -> None:
    with pytest.raises(FileNotAllowed, match=message):
        open_allowed_file(path.replace("{root}", str(root)))


def test_open_does_not_hang_on_a_fifo(root: Path) -> None:
    fifo = root / "sub" / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileNotAllowed, match="not a regular file"):
        open_allowed_file(fifo)


def test_open_uses_the_roots_configured_when_the_task_runs(root: Path, tmp_path: Path) -> None:
    path = str(root / "sub" / "doc.txt")
    with (
        override_settings(DJANGO_TASKQUEUE={"ALLOWED_FILE_ROOTS": [str(tmp_path / "other")]}),
        pytest.raises(FileNotAllowed, match="outside"),
    ):
        open_allowed_file(path)


def test_open_lets_a_missing_file_raise_file_not_found(root: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        open_allowed_file(root / "sub" / "gone.txt")
    assert caught.value.filename == str(root / "sub" / "gone.txt")


def test_open_is_for_reading_only(root: Path) -> None:
    with pytest.raises(ValueError, match="reading only"):
        open_allowed_file(root / "sub" / "doc.txt", "w")


def test_the_helper_is_public() -> None:
    import django_taskqueue

    assert django_taskqueue.open_allowed_file is open_allowed_file
    assert django_taskqueue.FileNotAllowed is FileNotAllowed
