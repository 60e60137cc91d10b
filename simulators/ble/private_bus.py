"""A private D-Bus daemon for the mock BlueZ: no root, no real system bus touched.

bleak talks to BlueZ on the *system* bus; dbus-fast reads the address from
``DBUS_SYSTEM_BUS_ADDRESS`` each time a connection is opened, so pointing that
variable at this daemon makes bleak's real BlueZ backend talk to our mock.
The daemon uses a session-type policy (anyone may own any name, including
``org.bluez``) and listens on a unix socket in its own temporary directory,
which unix-fd passing needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

DAEMON_START_TIMEOUT_S = 10.0

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def dbus_daemon_path() -> str | None:
    """The ``dbus-daemon`` executable (Debian package ``dbus``), or None."""
    return shutil.which("dbus-daemon") or next(
        (p for p in ("/usr/bin/dbus-daemon", "/bin/dbus-daemon") if Path(p).exists()), None
    )


class PrivateBus:
    """Start with :meth:`start` (or ``with PrivateBus() as bus``); ``bus.address`` is the D-Bus address."""

    def __init__(self, directory: Path | None = None) -> None:
        exe = dbus_daemon_path()
        if exe is None:
            raise FileNotFoundError("dbus-daemon not found; install the Debian package 'dbus'")
        self._exe = exe
        self._own_dir = directory is None
        # unix socket paths are limited to ~107 bytes, so keep the directory short.
        self.directory = Path(tempfile.mkdtemp(prefix="vg-dbus-")) if directory is None else Path(directory)
        self.socket = self.directory / "bus"
        self.config_file = self.directory / "bus.conf"
        self.address = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.config_file.write_text(_CONFIG.format(socket=self.socket))
        self._proc = subprocess.Popen(
            [self._exe, f"--config-file={self.config_file}", "--nofork", "--print-address"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon exited without printing its address")
        self.address = line
        return line

    def env(self) -> dict[str, str]:
        """Environment for a child process (a gateway) that should use this bus as its system bus."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(DAEMON_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
