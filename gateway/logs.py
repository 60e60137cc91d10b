"""Structured log lines a village technician can read: time, level, message, then key=value fields.

Never log names or national ID numbers: only the pseudonymous patient and device ids from the config.
"""

from __future__ import annotations

import logging
import sys

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STD and v is not None)
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
