"""Abort blocking I/O when a node is cancelled or its attempt runs out of time.

A node doing one blocking call (an HTTP read, a SQL statement) cannot look at ``ctx.cancel_event``
while it waits, so a small watcher thread does: when the event is set or the deadline passes it
calls ``abort`` (shut the sockets down, cancel the query), which makes the blocking call return
with an error that the node then reports as cancelled or timed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .base import NodeContext


class Watch:
    """What the watcher saw: ``reason`` is ``"cancelled"``, ``"timeout"`` or ``""`` (nothing happened)."""

    def __init__(self) -> None:
        self.reason = ""

    @property
    def fired(self) -> bool:
        return bool(self.reason)


@contextmanager
def watch_cancel(ctx: NodeContext, abort: Callable[[], None], *, poll: float = 0.05) -> Iterator[Watch]:
    """Run the body; call ``abort()`` once from a watcher thread if the run is cancelled or the deadline passes."""
    watch = Watch()
    done = threading.Event()

    def watcher() -> None:
        # Waiting on ``done`` (not on the cancel event) lets the body's end wake the watcher at once.
        while not done.wait(poll):
            if ctx.cancel_event.is_set():
                watch.reason = "cancelled"
            elif ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                watch.reason = "timeout"
            if watch.reason:
                abort()
                return

    thread = threading.Thread(target=watcher, name=f"watch-{ctx.node_id}", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join(timeout=1)
