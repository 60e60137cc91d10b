"""Live alert updates for open pages: every dispatcher transition, pushed as Server-Sent Events.

The dispatcher calls `on_transition` synchronously inside its commit, so it
only puts a small event into each open page's bounded queue and never waits.
A page that falls `QUEUE_SIZE` events behind (a tablet asleep on a slow WiFi)
gets one `resync` event instead of the backlog and reloads its list.

Each stream ends when the gateway stops (its stop event), so a browser tab
left open never holds up the shutdown; EventSource reconnects by itself to
the next gateway run (`retry:` below).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from stream.models import Alert

QUEUE_SIZE = 100
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and idle WiFi links from closing the stream
RETRY_MS = 2000


class LiveHub:
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._subscribers: set[asyncio.Queue] = set()
        self.events_sent = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def on_transition(self, alert: Alert, what: str) -> None:
        event = {
            "what": what,
            "alert_id": alert.alert_id,
            "patient_id": alert.patient_id,
            "condition": alert.condition.value,
            "severity": alert.severity.value,
            "tier": alert.tier.value,
            "state": alert.state.value,
            "acknowledged_by": alert.acknowledged_by,
        }
        self.publish("alert", event)

    def publish(self, kind: str, data: dict) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait((kind, data))
            except asyncio.QueueFull:
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(("resync", {}))

    async def stream(self) -> AsyncIterator[str]:
        q: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._subscribers.add(q)
        stop_wait = asyncio.ensure_future(self._stop.wait())
        get: asyncio.Future | None = None
        try:
            yield f"retry: {RETRY_MS}\nevent: hello\ndata: {{}}\n\n"
            while not self._stop.is_set():
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait({get, stop_wait}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    if stop_wait in done:
                        break
                    yield ": keepalive\n\n"
                    continue
                kind, data = get.result()
                self.events_sent += 1
                yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        finally:
            # a client that goes away cancels us inside the wait: cancel the pending get too, or
            # each disconnect leaves a task behind ("Task was destroyed but it is pending")
            stop_wait.cancel()
            if get is not None:
                get.cancel()
            self._subscribers.discard(q)
