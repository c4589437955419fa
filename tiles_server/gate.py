"""tiles_server.gate: how many tiles are drawn at once, and tiles nobody waits for any more.

Tiles are drawn in worker threads, at most ``slots`` at a time (about one per core: more only queue
inside GDAL and the interpreter). A request waits for a slot; when it gets one and its client has
gone (Leaflet cancels the tiles a pan or a zoom left behind, a browser tab closed), the tile is not
drawn at all. A tile being drawn is not interrupted; its cost is bounded (see
:data:`tiles_server.rendering.MAX_SOURCE_PIXELS`).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.requests import Request


@dataclass
class TileGate:
    """The drawing slots of one application, and what became of the requests (reported by ``/healthz``)."""

    slots: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    drawn: int = 0
    abandoned: int = 0
    _semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one drawing slot (one semaphore per event loop: a test client may run its own loop)."""
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.slots)
        async with semaphore:
            yield

    def counts(self) -> dict[str, int]:
        """Slots, tiles drawn and tiles abandoned because their client had gone."""
        return {"slots": self.slots, "drawn": self.drawn, "abandoned": self.abandoned}


async def client_gone(request: Request) -> bool:
    """True when the client has closed its connection (checked without waiting)."""
    for _ in range(2):  # the first message may be the (empty) body of the GET, the next the disconnect
        if await request.is_disconnected():
            return True
    return False
