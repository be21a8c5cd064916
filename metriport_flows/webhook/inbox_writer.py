"""Group commit for the receiver: the webhooks that arrive while one batch commits go in the next batch.

Each request still answers only after its own row is committed (a 200 means durable; a SIGKILL loses
nothing that was answered), but many requests share one transaction and one round trip, so under load
the inbox costs a commit per batch instead of per webhook, and alone a webhook waits for no one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from metriport_flows.store.async_inbox import async_inbox
from metriport_flows.store.inbox import NewMessage
from metriport_flows.store.store import Store

MAX_BATCH = 256


class InboxWriter:
    """`await writer.store(message)`: True when new, False for a duplicate; raises what the insert raised."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH, on_new: Callable[[], None] | None = None) -> None:
        """`on_new` is called after a batch that stored a new message commits (it wakes the dispatcher)."""
        self.inbox, self.max_batch, self.on_new = async_inbox(store), max_batch, on_new
        self._queue: asyncio.Queue[tuple[NewMessage, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def store_message(self, message: NewMessage) -> bool:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_batches())
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((message, answer))
        return await answer

    async def close(self) -> None:
        """Finish the batches already queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.inbox.dispose()

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                inserted = await self.inbox.insert_messages([m for m, _ in batch])
            except Exception as exc:  # every request of the batch gets the failure, none a false 200
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
            else:
                if inserted and self.on_new is not None:
                    self.on_new()
                for message, answer in batch:
                    new = message.message_id in inserted
                    inserted.discard(message.message_id)  # the same id twice in a batch: one is the duplicate
                    if not answer.done():
                        answer.set_result(new)
            finally:
                for _ in batch:
                    self._queue.task_done()
