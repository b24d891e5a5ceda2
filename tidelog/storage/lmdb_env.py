"""Opening LMDB environments safely and translating py-lmdb's errors.

Shared by the segment, meta and log modules of the LMDB backend. Three things
live here because every LMDB user in the backend needs them:

* :func:`lmdb_errors` turns any ``lmdb.Error`` into a :mod:`tidelog.errors`
  class (callers never see a driver exception);
* :func:`open_env` refuses files LMDB would mishandle: a missing or empty
  ``data.mdb`` (LMDB would silently start a new, empty database) and a file
  shorter than the pages its meta page points to (LMDB would map it and the
  process would die of SIGBUS on the first read past the end);
* small helpers for keys and for making renames durable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from tidelog.errors import CorruptLogError, LogLockedError, StorageError, StorageFullError
from tidelog.storage.base import FsyncPolicy

U64 = struct.Struct(">Q")
"""Offsets and counters: 8-byte big-endian, so keys sort numerically."""
TIME_KEY = struct.Struct(">QQ")
"""Time index keys: timestamp then offset."""

DATA_FILE = "data.mdb"
ALWAYS = FsyncPolicy("always")

_CORRUPT = (
    lmdb.CorruptedError,
    lmdb.InvalidError,
    lmdb.PageNotFoundError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
)


def translate(exc: lmdb.Error, where: str | os.PathLike[str]) -> StorageError:
    """The :mod:`tidelog.errors` exception for a py-lmdb error raised at ``where``."""
    text = f"{where}: {exc}"
    if isinstance(exc, _CORRUPT):
        return CorruptLogError(text)
    if isinstance(exc, lmdb.MapFullError) or getattr(exc, "code", 0) in (
        errno.ENOSPC,
        errno.EDQUOT,
    ):
        return StorageFullError(text)
    return StorageError(text)


@contextlib.contextmanager
def lmdb_errors(where: str | os.PathLike[str]) -> Iterator[None]:
    """Translate ``lmdb.Error`` and ``OSError`` raised inside the block."""
    try:
        yield
    except lmdb.Error as exc:
        raise translate(exc, where) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"{where}: {exc}") from exc
        raise StorageError(f"{where}: {exc}") from exc


def env_flags(policy: FsyncPolicy) -> dict[str, bool]:
    """``lmdb.open`` flags for an fsync policy.

    ``always`` syncs data and meta page on every commit (LMDB's default, the
    only setting where a commit is durable when it returns); ``interval`` and
    ``never`` skip both (``MDB_NOSYNC``) and rely on :meth:`lmdb.Environment.sync`
    from the interval task, at seal and at close. A process crash loses nothing
    either way (the pages are in the OS cache); an OS crash may lose or, with
    ``never``, corrupt the last transactions (see docs/storage.md).
    """
    durable = policy.mode == "always"
    return {"sync": durable, "metasync": durable}


def open_env(
    path: Path,
    *,
    readonly: bool,
    max_dbs: int,
    map_size: int = 10 * 1024 * 1024,
    create: bool = False,
    policy: FsyncPolicy = ALWAYS,
) -> lmdb.Environment:
    """Open the environment in directory ``path``, refusing truncated or missing files.

    With ``create=False`` the directory and a non-empty ``data.mdb`` must exist.
    Read-only environments are opened without a lock file (``lock=False``): the
    log's directory lock already keeps every other writer out.
    """
    data = path / DATA_FILE
    if not create:
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            raise CorruptLogError(f"{data} is missing") from None
        except OSError as exc:
            raise StorageError(f"{data}: {exc}") from exc
        if size == 0:
            raise CorruptLogError(f"{data} is empty (truncated)")
    options: dict[str, Any] = {
        "subdir": True,
        "max_dbs": max_dbs,
        "map_size": map_size,
        "readonly": readonly,
        "create": create,
        "meminit": False,
        "max_spare_txns": 4,
    }
    if readonly:
        options["lock"] = False
    else:
        options.update(env_flags(policy))
    with lmdb_errors(path):
        env = lmdb.open(str(path), **options)
    try:
        check_env_size(env, path)
    except BaseException:
        env.close()
        raise
    return env


def check_env_size(env: lmdb.Environment, path: Path) -> None:
    """Refuse a ``data.mdb`` shorter than the pages LMDB's meta page says are in use.

    Reading a page past the end of a memory-mapped file raises SIGBUS, which
    kills the process; checking the size first turns a truncated file into a
    :class:`CorruptLogError`.
    """
    with lmdb_errors(path):
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (path / DATA_FILE).stat().st_size
    if size < needed:
        raise CorruptLogError(
            f"{path / DATA_FILE} is truncated: {size} bytes, LMDB expects at least {needed}"
        )


def used_bytes(env: lmdb.Environment, page_size: int | None = None) -> int:
    """Bytes of the map the environment uses (pages up to the last one written).

    ``page_size``: the environment's (``env.stat()["psize"]``, fixed once it is
    open), when the caller has it: a segment's writer thread calls this after
    every commit, and each py-lmdb call there gives the GIL up and takes it back."""
    if page_size is None:
        page_size = env.stat()["psize"]
    return (env.info()["last_pgno"] + 1) * page_size


def fsync_dir(path: Path) -> None:
    """Make a rename or a removal inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_directory(root: Path) -> int:
    """Take the data directory's lock (``<root>/LOCK``); return the descriptor holding it.

    ``flock`` locks belong to an open file description, so a second opener is
    refused whether it is another process or this one. The lock goes with the
    descriptor (closing it, or the process dying, releases it); the file stays.
    """
    path = root / "LOCK"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LogLockedError(
            f"{root} is already open (lock held by process {holder}); "
            "a data directory can be used by one log at a time"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot lock {path}: {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
