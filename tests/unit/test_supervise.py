"""A background loop that dies is noticed (issue 13, finding 3: the Job creator died silently)."""

from __future__ import annotations

import asyncio

from crawljob.operator.supervise import Supervisor


async def test_a_loop_that_raises_marks_the_operator_dead() -> None:
    supervisor = Supervisor()

    async def creator() -> None:
        raise AttributeError("'str' object has no attribute 'get'")

    async def healthy() -> None:
        await asyncio.Event().wait()

    supervisor.start("creator_loop", creator())
    supervisor.start("scheduler_loop", healthy())
    await asyncio.sleep(0.05)
    assert supervisor.dead == "creator_loop stopped: AttributeError(\"'str' object has no attribute 'get'\")"
    await supervisor.stop()
    assert not supervisor.tasks


async def test_a_loop_that_returns_is_dead_too_and_cancelling_is_not() -> None:
    supervisor = Supervisor()

    async def finishes() -> None:
        return None

    async def waits() -> None:
        await asyncio.Event().wait()

    supervisor.start("waiter", waits())
    await asyncio.sleep(0.01)
    await supervisor.stop()
    assert supervisor.dead is None
    supervisor.start("resync_loop", finishes())
    await asyncio.sleep(0.01)
    assert supervisor.dead == "resync_loop returned"
