"""Structured log lines a village technician can read: time, level, message, then key=value fields.

Never log names or national ID numbers: only the pseudonymous patient and device ids from the config.
"""

from __future__ import annotations

import json
import logging
import sys

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


# control characters (a newline in an ack's `by` forged a whole log line) are written escaped
_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


def _escape(text: str) -> str:
    return text.translate(_CONTROL)


def _value(v: object) -> str:
    """A field value: as is when plain, else quoted JSON-style so one line stays one record."""
    text = str(v)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = _escape(record.getMessage())
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: {msg}"
        fields = " ".join(f"{k}={_value(v)}" for k, v in record.__dict__.items() if k not in _STD and v is not None)
        out = f"{base} {fields}" if fields else base
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("amqtt", "transitions", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
