"""Small structured-concurrency helpers shared by every layer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio


@contextlib.asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for an object's background tasks, around a block that uses the object.

    trio wraps every exception leaving a nursery in an ExceptionGroup. For a
    context manager like ``open_log`` that would turn a caller's own
    ``CorruptLogError`` (raised in the ``async with`` body) into a group they
    cannot catch with ``except CorruptLogError``. This nursery re-raises a lone
    exception as itself; a real group (several tasks failed) stays a group.
    The caller cancels the nursery's scope when the block ends.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@contextlib.asynccontextmanager
async def held(lock: trio.Lock) -> AsyncIterator[None]:
    """``async with lock``, minus the checkpoint when the lock is free: a task on a
    hot path (a link's sink takes two locks per batch) does not yield a round of the
    event loop for a lock nobody holds. Waits (and so checkpoints) only when held.
    Nor is it a cancellation point then: a cancelled task that finds the lock free
    runs the block (a link's sink appends the group it took, under its shield, and
    the cancelled acknowledgement makes the peer resend it as duplicates)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        yield
    finally:
        lock.release()
