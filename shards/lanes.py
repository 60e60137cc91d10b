"""Which lane a device's readings take: the critical lane or the ECG (bulk) lane.

A lane is an MQTT session of its own (the broker keeps a queue per session, so
a backlog of ECG frames at the broker never sits in front of a glucose
reading) and a stream core of its own (per-patient queues and workers).

* The **critical session** keeps the gateway's client id, its last will and
  its status; it subscribes to each configured BP, glucose and SpO2 device's
  topics by name, and to the acknowledgement and control topics. Everything
  such a device sends (its battery and heart-rate readings too) takes this
  lane.
* The **ECG session** subscribes to every device topic (the wildcards), so it
  also hears unknown devices; messages of the critical devices reach it too
  and are acknowledged without being handled, as the critical session carries
  them.

Topics carry the device, not the reading kind, so the lane is chosen by the
configured device kind. The one-session gateway of earlier versions
subscribed its persistent session to the wildcards; the critical session
drops those subscriptions (`STALE`), and what the broker had queued for it
before is still handled (whatever its lane), once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stream.models import DeviceKind

CRITICAL_KINDS = frozenset({DeviceKind.BLOOD_PRESSURE, DeviceKind.GLUCOSE, DeviceKind.SPO2})
ECG_CLIENT_SUFFIX = "-ecg"  # the ECG session's client id: the gateway's, plus this
# Unacknowledged messages the broker may hand the critical session (MQTT 5 Receive Maximum). With the
# disk full its readings are judged but held unacknowledged until stored: this many can pile up before
# the broker stops sending, about a day of a few hundred patients' readings (a few MB in memory).
CRITICAL_RECEIVE_MAXIMUM = 10_000


def is_critical(kind: DeviceKind) -> bool:
    """Readings of this device kind can raise a critical or high alert: they take the critical lane."""
    return kind in CRITICAL_KINDS


def device_wildcards(prefix: str) -> list[str]:
    return [f"{prefix}/device/+/reading", f"{prefix}/device/+/gatt/+"]


@dataclass(frozen=True)
class LaneSubscriptions:
    critical: list[str]  # the critical session's topic filters
    ecg: list[str]  # the ECG session's
    stale: list[str]  # filters the critical session drops (the one-session gateway's wildcards)


def subscriptions(prefix: str, critical_devices: Iterable[str], control_topics: Iterable[str]) -> LaneSubscriptions:
    """`prefix`: vg/{clinic}; `critical_devices`: ids of the configured BP, glucose and SpO2 devices."""
    named = [
        t for d in sorted(critical_devices) for t in (f"{prefix}/device/{d}/reading", f"{prefix}/device/{d}/gatt/+")
    ]
    return LaneSubscriptions(
        critical=[f"{prefix}/ack", *[f"{prefix}/{t}" for t in control_topics], *named],
        ecg=device_wildcards(prefix),
        stale=device_wildcards(prefix),
    )


def device_of(topic: str, prefix: str) -> str | None:
    """`vg/{clinic}/device/{id}/...` -> id (None for any other topic)."""
    head = prefix + "/device/"
    if not topic.startswith(head):
        return None
    rest = topic[len(head) :]
    i = rest.find("/")
    return rest[:i] if i > 0 else None
