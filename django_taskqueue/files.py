"""Which files may be named, and opening them safely when the task runs.

The file-root policy: a path given over HTTP must be absolute, at most
:data:`MAX_PATH_LENGTH` characters of valid UTF-8 text, and after resolving
symlinks and ``..`` it must lie inside one of ``ALLOWED_FILE_ROOTS``.
:func:`resolve_allowed_file` applies it when a task is started (the API's
serializers call it and turn its :class:`~django.core.exceptions.ValidationError`
into a 400); :func:`open_allowed_file` applies it again when the task runs,
because the file may have been replaced in between.

Core policy: this module imports only Django.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO, Any

from django.core.exceptions import ValidationError

from django_taskqueue.conf import conf

#: The longest file path accepted, in characters (the length of ``TaskLog.file_path``).
MAX_PATH_LENGTH = 1024

#: The modes :func:`open_allowed_file` opens a file in: reading only.
READ_MODES = frozenset({"r", "rt", "rb"})

# How much of a refused path a message repeats: enough to recognise it, never
# the whole of a path of megabytes.
_SHOWN = 200

# Flags that exist on POSIX only; 0 where the platform has no such flag.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class FileNotAllowed(ValidationError):
    """A file path that the file-root policy refuses.

    A Django :class:`~django.core.exceptions.ValidationError`, so the API
    answers it with a 400. In a task it fails the run with
    ``error_code="FileNotAllowed"`` and its message as the error message.
    """

    def __str__(self) -> str:
        # ValidationError's str() is the list's repr; a task's error message reads better.
        return " ".join(self.messages)


def _shown(path: str) -> str:
    """``repr(path)``, cut short: safe to put in a message (repr escapes lone surrogates)."""
    if len(path) > _SHOWN:
        return repr(path[:_SHOWN]) + f" (cut; {len(path)} characters)"
    return repr(path)


def _check_text(path: str, what: str = "The path") -> None:
    """Refuse what cannot be a file name we store and show: NUL, text that is not UTF-8."""
    if "\x00" in path:
        raise FileNotAllowed(f"{what} must not contain NUL characters.", code="nul")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate: from a file name whose bytes are not UTF-8 (os.listdir
        # decodes them with surrogateescape), or from a JSON "\udXXX" escape.
        character = f"U+{ord(path[exc.start]):04X}"
        raise FileNotAllowed(
            f"{what} is not valid UTF-8 text ({character} at position {exc.start}): "
            "give file names in UTF-8, or rename the file.",
            code="encoding",
        ) from None


def check_path(path: Any) -> str:
    """Check a path's text, before anything touches the file system.

    The path must be a string (or :class:`os.PathLike`) of at most
    :data:`MAX_PATH_LENGTH` characters, without NUL, valid as UTF-8, and
    absolute. The length is checked first, so a huge path costs nothing.

    Returns:
        The path as a string.

    Raises:
        FileNotAllowed: with a message that says what is wrong.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        raise FileNotAllowed("The path must be a string.", code="type")
    if len(path) > MAX_PATH_LENGTH:
        raise FileNotAllowed(
            f"The path is {len(path)} characters long; the limit is {MAX_PATH_LENGTH}.",
            code="max_length",
        )
    _check_text(path)
    if not os.path.isabs(path):
        raise FileNotAllowed(f"{_shown(path)} is not an absolute path.", code="relative")
    return path


def allowed_roots() -> list[str]:
    """``ALLOWED_FILE_ROOTS``, each resolved (symlinks followed), read live.

    Raises:
        FileNotAllowed: the setting names no directory.
    """
    roots = [os.path.realpath(root) for root in conf.ALLOWED_FILE_ROOTS]
    if not roots:
        raise FileNotAllowed(
            "No file can be processed: the ALLOWED_FILE_ROOTS setting names no directory.",
            code="no_roots",
        )
    return roots


def _root_of(real: str, roots: list[str]) -> str | None:
    """The root that the resolved path ``real`` lies inside, if any."""
    for root in roots:
        if os.path.commonpath([real, root]) == root:
            return root
    return None


def _resolve_inside_roots(path: str) -> tuple[str, str]:
    """``(resolved path, its root)``; the roots are checked before existence."""
    roots = allowed_roots()
    real = os.path.realpath(path)
    root = _root_of(real, roots)
    if root is None:
        raise FileNotAllowed(f"{_shown(path)} is outside the allowed directories.", code="outside")
    # The resolved name is what is stored and shown: it must be valid text too.
    _check_text(real, what=f"The file that {_shown(path)} names")
    return real, root


def resolve_allowed_file(path: Any) -> dict[str, Any]:
    """Check a file path given over HTTP and describe the file.

    The path must pass :func:`check_path`; after resolving symlinks and ``..``
    it must lie inside one of ``ALLOWED_FILE_ROOTS`` (also resolved) and be a
    regular file. The roots are checked before existence, so the answer never
    tells whether a file outside them exists.

    This is the check when a task is *started*; a task that opens the file
    later should open it with :func:`open_allowed_file`, which checks again.

    Returns:
        ``{"file_path": <the resolved path>, "file_name": ..., "file_size": ...}``.

    Raises:
        FileNotAllowed: (a :class:`~django.core.exceptions.ValidationError`)
            with a message that says what is wrong.
    """
    path = check_path(path)
    real, _ = _resolve_inside_roots(path)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise FileNotAllowed(f"{_shown(path)} does not exist.", code="missing") from None
    except OSError as exc:
        raise FileNotAllowed(
            f"{_shown(path)} cannot be read: {exc.strerror}.", code="unreadable"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise FileNotAllowed(f"{_shown(path)} is not a regular file.", code="not_regular")
    return {"file_path": real, "file_name": os.path.basename(real), "file_size": info.st_size}


def _open_beneath(root: str, real: str, shown: str) -> int:
    """Open ``real`` for reading, one component at a time below ``root``, following no symlink.

    Each directory is opened relative to the previous one with ``O_NOFOLLOW``,
    so a component replaced by a symlink (or the file itself) after ``real``
    was resolved makes the open fail instead of leaving the root: the check and
    the open are not two steps that someone can slip a change between. The file
    is opened non-blocking, so a FIFO put in its place cannot hang the task.
    """
    parts = os.path.relpath(real, root).split(os.sep)
    if parts == ["."]:
        raise FileNotAllowed(f"{shown} is not a regular file.", code="not_regular")
    if not (_NOFOLLOW and _DIRECTORY and os.open in os.supports_dir_fd):
        return _open_and_compare(real, shown)
    directory = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = below
        return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=directory)
    except OSError as exc:
        # ELOOP: a symlink where a directory or the file was (EMLINK on FreeBSD);
        # ENOTDIR: a directory replaced by something else.
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
            raise FileNotAllowed(
                f"{shown} changed after it was checked (a part of it is now a symbolic link "
                "or not a directory); it is not opened.",
                code="changed",
            ) from None
        raise type(exc)(exc.errno, exc.strerror, real) from None
    finally:
        os.close(directory)


def _open_and_compare(real: str, shown: str) -> int:
    """Open where ``dir_fd`` is missing (Windows): open, then check the same file is there."""
    fd = os.open(real, os.O_RDONLY | _BINARY)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(real)) or os.path.realpath(real) != real:
            raise FileNotAllowed(f"{shown} changed while it was opened.", code="changed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_allowed_file(
    path: str | os.PathLike[str],
    mode: str = "rb",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """Open a file named by a user, for reading, only if it lies inside ``ALLOWED_FILE_ROOTS``.

    Use it in a task instead of :func:`open` for a path that came from a
    request: the API checked the path when the task was created, but the file
    may have been replaced since (by a symlink to ``/etc/shadow``, say). This
    checks again, now, with the roots as they are configured now, and opens the
    file so that the check cannot be raced: below the root, no symlink is
    followed (a symlink that was inside the roots when the path was resolved
    is fine; the task receives the resolved path anyway).

    Args:
        path: an absolute path, usually the task's ``file_path`` argument.
        mode: ``"rb"`` (the default), ``"r"`` or ``"rt"``: reading only.
        encoding: text mode's encoding, as for :func:`open`.
        errors: text mode's error handler, as for :func:`open`.
        newline: text mode's newline handling, as for :func:`open`.

    Returns:
        A file object, to use as a context manager; its ``name`` is the resolved path.

    Raises:
        FileNotAllowed: the path is outside the roots, not a regular file, or
            changed while it was opened. Let it propagate: the task fails with
            ``error_code="FileNotAllowed"``.
        FileNotFoundError: the file no longer exists (and other ``OSError`` s).
        ValueError: ``mode`` is not a reading mode.

    Example::

        @shared_task(base=TrackedTask, bind=True, task_type="document")
        def count_lines(self, file_path, **options):
            with open_allowed_file(file_path, "r", encoding="utf-8") as handle:
                return sum(1 for _ in handle)
    """
    if mode not in READ_MODES:
        raise ValueError(f"open_allowed_file() opens files for reading only, not {mode!r}")
    text = check_path(path)
    real, root = _resolve_inside_roots(text)
    shown = _shown(text)
    fd = _open_beneath(root, real, shown)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotAllowed(f"{shown} is not a regular file.", code="not_regular")
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    # The opener hands over the descriptor already open; open() closes it if it fails.
    return open(real, mode, encoding=encoding, errors=errors, newline=newline, opener=lambda *_: fd)
