"""A long-lived worker thread for a log's write transactions.

``trio.to_thread.run_sync`` costs a thread-cache hand-off, an ``outcome``
capture, a cancel-status check and (with the overlapped commit) a nursery on
every call. Under light load every event is its own commit, so that fixed cost
*is* the per-event cost: at 500 events/s it was most of the broker's CPU time
(see "Where the time goes" in docs/benchmarks.md). :class:`WriterThread` keeps
one thread per log, fed by a queue; a job reports back with one
``run_sync_soon`` per message (a result, or the "committing" signal of an
overlapped commit), and the waiting task is rescheduled directly.

The thread is started on first use and stopped by :meth:`WriterThread.stop`.
Jobs run one at a time, in submission order.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


def _refuse_abort(_: Any) -> trio.lowlevel.Abort:
    # A write in progress must finish (it may be committing): waits are not cancellable,
    # like trio.to_thread.run_sync without abandon_on_cancel.
    return trio.lowlevel.Abort.FAILED


class Mailbox:
    """Messages from the writer thread to one waiting trio task.

    :meth:`post` runs on the trio thread (through ``run_sync_soon``); it queues
    the message and reschedules the task if it is parked in :meth:`get`, so
    several messages posted in one scheduler pass never reschedule it twice.
    """

    __slots__ = ("_messages", "_parked", "_task", "_token")

    def __init__(self) -> None:
        self._task = trio.lowlevel.current_task()
        self._token = trio.lowlevel.current_trio_token()
        self._messages: deque[outcome.Outcome[Any]] = deque()
        self._parked = False

    def send(self, message: outcome.Outcome[Any]) -> None:
        """From the writer thread: hand ``message`` to the task."""
        self._token.run_sync_soon(self._post, message)

    def signal(self) -> None:
        """From the writer thread: wake the task with ``None`` (a progress signal)."""
        self._token.run_sync_soon(self._post, outcome.Value(None))

    def _post(self, message: outcome.Outcome[Any]) -> None:
        self._messages.append(message)
        if self._parked:
            self._parked = False
            trio.lowlevel.reschedule(self._task)

    async def get(self) -> Any:
        """Wait for the next message; return its value or raise its exception."""
        if not self._messages:
            self._parked = True
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        return self._messages.popleft().unwrap()


class WriterThread:
    """One daemon thread running blocking jobs in order for the trio thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Mailbox] | None]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, mailbox: Mailbox, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the thread; its result (or exception) goes to ``mailbox``.

        ``fn`` may send ``mailbox`` messages of its own first (a progress signal).
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, mailbox))

    async def run_sync(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the thread and return its result (not cancellable)."""
        mailbox = Mailbox()
        self.submit(mailbox, fn, *args)
        result: T = await mailbox.get()
        return result

    async def stop(self) -> None:
        """Let the queued jobs finish, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            await trio.to_thread.run_sync(thread.join)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, mailbox = job
            result = outcome.capture(fn, *args)
            del job, fn, args  # drop references before blocking again
            # if the trio run has ended, nobody is waiting any more
            with contextlib.suppress(trio.RunFinishedError):
                mailbox.send(result)
