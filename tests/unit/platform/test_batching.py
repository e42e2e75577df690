"""Group commit: concurrent callers share writes, and each gets its own result or the
error of its own write."""

from __future__ import annotations

import asyncio

import pytest

from cockpit.platform.batching import GroupCommit


async def test_callers_arriving_during_a_write_share_the_next_one_and_get_their_own_results() -> None:
    writes: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        if len(writes) == 1:
            await release.wait()  # the first write is slow: the others pile up behind it
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(write, limit=4)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 10)]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 10)]
    # Order kept; the waiting ones went in groups of at most four.
    assert writes == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failed_write_fails_its_own_callers_only() -> None:
    async def write(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("database away")
        return [s.upper() for s in items]

    group: GroupCommit[str, str] = GroupCommit(write, limit=2)
    results = await asyncio.gather(*(group.submit(s) for s in ["bad", "x", "y", "z"]), return_exceptions=True)
    assert [type(r) for r in results[:2]] == [RuntimeError, RuntimeError]
    assert results[2:] == ["Y", "Z"]
    assert await group.submit("later") == "LATER"


async def test_callers_of_a_cancelled_write_are_not_left_waiting() -> None:
    started = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()
        return items

    group: GroupCommit[int, int] = GroupCommit(write)
    callers = [asyncio.create_task(group.submit(i)) for i in range(3)]
    await started.wait()
    late = asyncio.create_task(group.submit(3))
    await asyncio.sleep(0)
    assert group._task is not None
    group._task.cancel()
    for caller in [*callers, late]:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 1)
