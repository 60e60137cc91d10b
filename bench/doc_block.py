"""Benches write what they print into ``docs/performance.md``, so the figures there are today's.

    python bench/ecg_crossval.py --doc      # replaces the block <!-- bench:ecg_crossval --> ... <!-- /bench -->

Each bench owns one block (named after the bench); the text around the blocks is written by
people.  A block that does not exist yet is appended at the end.
"""

from __future__ import annotations

import datetime as dt
import io
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TextIO

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=DOC.parent, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_block(name: str, command: str, text: str, doc: Path = DOC) -> None:
    """Replace (or append) bench ``name``'s block with ``text``, stamped with the command, date and commit."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = (
        f"`{command}` — {dt.date.today().isoformat()}, commit {_commit()}, "
        f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    )
    block = f"{begin}\n{stamp}\n\n```text\n{text.rstrip()}\n```\n{end}"
    old = doc.read_text() if doc.exists() else "# Measured performance\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    doc.write_text(new)


class _Tee(io.TextIOBase):
    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


@contextmanager
def captured(enabled: bool, name: str, command: str) -> Iterator[None]:
    """Print as usual; with ``enabled``, also write what was printed as bench ``name``'s block."""
    if not enabled:
        yield
        return
    buf = io.StringIO()
    with redirect_stdout(_Tee(sys.stdout, buf)):
        yield
    write_block(name, command, buf.getvalue())
    print(f"(written to {DOC.relative_to(DOC.parents[1])}, block {name})", file=sys.stderr)
