"""Supervised background loops: a loop that ends (by an exception, or by returning) is recorded,
logged once, and makes `/healthz` answer 503 so Kubernetes restarts the pod. A loop must not die
quietly while the operator still looks healthy (issue 13, finding 3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("crawljob.operator")


class Supervisor:
    """Starts named loops and remembers the first that ended on its own."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dead: str | None = None

    def start(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run *coroutine* as the loop *name*; its end, unless cancelled, marks the operator dead."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        what = f"{task.get_name()} stopped: {error!r}" if error else f"{task.get_name()} returned"
        if self.dead is None:
            self.dead = what
        log.error("background loop %s; /healthz now fails so the pod is restarted", what, exc_info=error)

    async def stop(self) -> None:
        """Cancel every loop and wait for them."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
