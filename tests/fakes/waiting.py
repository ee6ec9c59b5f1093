"""Waiting for a condition with a timeout (instead of fixed sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Await *predicate* until it returns a truthy value, and return that; TimeoutError after *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
