"""systemd's notify protocol (sd_notify(3)) without libsystemd: READY, WATCHDOG, STATUS, STOPPING.

`deploy/vitalgate.service` runs the gateway with `Type=notify` and `WatchdogSec=`: systemd passes
the socket to write to (`NOTIFY_SOCKET`) and the watchdog period (`WATCHDOG_USEC`). The gateway says
READY once it has started (not once the broker answers: a box whose broker is down is running and
retrying, not failing to start), pets the watchdog from its status loop, the loop that also
checks devices for silence every second, so a hung event loop stops the pets and systemd kills
and restarts the gateway after `WatchdogSec`, and says STOPPING on SIGTERM. A one-line STATUS
(broker, storage, uplink) shows in `systemctl status vitalgate` for the technician.

Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("vitalgate.gateway")


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        addr = environ.get("NOTIFY_SOCKET", "")
        # '@name' is a socket in the abstract namespace (a leading NUL byte on the wire)
        self._addr: str | bytes | None = ("\0" + addr[1:]) if addr.startswith("@") else (addr or None)
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # systemd names the process the watchdog is for
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_pet = 0.0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; False (logged once) if systemd could not be told."""
        if self._addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(fields).encode(), self._addr)
            return True
        except OSError as exc:
            log.warning(
                "cannot notify systemd on %s: %s; the watchdog will restart the gateway if it is set",
                os.environ.get("NOTIFY_SOCKET"),
                exc,
            )
            self._addr = None  # said once; do not fill the log every second
            return False

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def tick(self, status: str) -> None:
        """Called every status-loop tick: pet the watchdog (at a third of its period), update STATUS."""
        now = time.monotonic()
        fields = []
        if self.watchdog_s is not None and now - self._last_pet >= self.watchdog_s / 3:
            fields.append("WATCHDOG=1")
            self._last_pet = now
        if status != self._last_status:
            fields.append(f"STATUS={status}")
            self._last_status = status
        if fields:
            self.send(*fields)

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: handling what has arrived, flushing alerts")
