"""cancel_and_wait ends a loop whose cancel was lost, as asyncio.wait_for in Python 3.11 can lose one."""

from __future__ import annotations

import asyncio

from streamsight.tasks import cancel_and_wait


async def test_a_loop_that_swallowed_its_cancel_is_cancelled_again_until_it_ends():
    swallowed = 0

    async def heartbeat():  # a NATS request loop whose wait_for returned a result instead of CancelledError
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed < 3:
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.1)
    assert not task.done(), "a plain cancel was lost: awaiting the task now would wait for ever"
    await asyncio.wait_for(cancel_and_wait([task, None]), 5)
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_failed_is_logged_not_raised_and_finished_ones_are_left_alone(capsys):
    async def broken():
        raise RuntimeError("lease bucket gone")

    failed, finished = asyncio.create_task(broken(), name="broken-loop"), asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait([failed, finished])
    assert finished.done() and not finished.cancelled()
    out = capsys.readouterr()
    assert "broken-loop" in out.out + out.err and "lease bucket gone" in out.out + out.err
