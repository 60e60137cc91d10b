"""`/metrics` in the Prometheus text exposition format (0.0.4), and `/healthz`.

Hand-formatted from the gateway's own counters (its `ConsoleSources`) at scrape time, so there is no
second registry to keep in step. No label carries a patient id: device ids and
clinic ids only (pseudonymous, but a scrape target is often less protected
than the page). Metric names and what they count:

- `vitalgate_readings_total{kind,result="accepted"}`: readings stored, by kind
- `vitalgate_readings_rejected_total{reason}`: refused payloads, by reason (kind is unknown for most)
- `vitalgate_queue_depth`: readings waiting in the patient queues
- `vitalgate_outbox_pending{outbox}`: alert MQTT outbox, uplink (alerts / telemetry) and TSDB rows not yet sent
- `vitalgate_alerts{tier,state}`: alerts that are firing or acknowledged now
- `vitalgate_alert_events_total{event}`: dispatcher transitions since start (raised, escalated, acknowledged, ...)
- `vitalgate_device_connected{device,kind,link}`: 1 if the device is connected (BLE) or reported recently (MQTT)
- `vitalgate_device_last_seen_seconds{device}`: seconds since the device's last accepted reading
- `vitalgate_mqtt_connected`, `vitalgate_uplink_connected`, `vitalgate_console_live_clients`
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from console.web.sources import ConsoleSources
from stream.models import AlertState, Tier


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, object], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_fmt_labels(labels)} {float(value):g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(src: ConsoleSources, devices: list[dict[str, Any]], live_clients: int) -> str:
    """`devices`: the console's device rows (id, kind, link, connected, last_seen_s)."""
    e = Exposition()
    c = src.live.counters
    e.metric("vitalgate_readings_total", "counter", "Readings accepted and stored, by kind.",
             (({"kind": k, "result": "accepted"}, v) for k, v in sorted(c.accepted.items())))
    e.metric("vitalgate_readings_rejected_total", "counter", "Payloads refused, by reason.",
             (({"reason": k}, v) for k, v in sorted(c.rejected.items())))
    e.metric("vitalgate_queue_depth", "gauge", "Readings waiting in the per-patient queues.",
             [({}, src.live.queue_depth())])
    outboxes: list[tuple[dict[str, object], float]] = [({"outbox": "alerts_mqtt"}, len(src.alerts.pending()))]
    fwd = src.live.forwarding_status()
    if "uplink" in fwd:
        outboxes.append(({"outbox": "uplink_alerts"}, fwd["uplink"].get("pending_alerts", 0)))
        outboxes.append(({"outbox": "uplink_telemetry"}, fwd["uplink"].get("pending_telemetry", 0)))
    if "tsdb" in fwd:
        outboxes.append(({"outbox": "tsdb"}, fwd["tsdb"].get("pending", 0)))
    outboxes.append(({"outbox": "unstored_readings"}, fwd["storage"].get("held_unstored", 0)))
    e.metric("vitalgate_outbox_pending", "gauge", "Rows waiting to be sent, per outbox.", outboxes)
    active = src.alerts.active()
    counts = {(t.value, s.value): 0 for t in Tier for s in (AlertState.FIRING, AlertState.ACKNOWLEDGED)}
    for s in active:
        key = (s.alert.tier.value, s.alert.state.value)
        counts[key] = counts.get(key, 0) + 1
    e.metric("vitalgate_alerts", "gauge", "Open alerts by tier and state.",
             (({"tier": t, "state": st}, n) for (t, st), n in sorted(counts.items())))
    e.metric("vitalgate_alert_events_total", "counter", "Dispatcher transitions since start.",
             (({"event": k}, v) for k, v in sorted(src.desk.counters.items())))
    e.metric("vitalgate_device_connected", "gauge",
             "1 if the device is connected (BLE) or has reported within its expected interval (MQTT).",
             (({"device": d["device_id"], "kind": d["kind"], "link": d["link"]}, 1 if d["connected"] else 0)
              for d in devices))
    e.metric("vitalgate_device_last_seen_seconds", "gauge", "Seconds since the device's last accepted reading.",
             (({"device": d["device_id"]}, d["last_seen_s"]) for d in devices if d["last_seen_s"] is not None))
    e.metric("vitalgate_mqtt_connected", "gauge", "1 while the gateway is connected to the local broker.",
             [({}, 1 if src.live.mqtt_connected() else 0)])
    if "uplink" in fwd:
        e.metric("vitalgate_uplink_connected", "gauge", "1 while the county uplink is connected.",
                 [({}, 1 if fwd["uplink"].get("connected") else 0)])
    ecg = src.live.ecg_analysis_status()
    e.metric("vitalgate_ecg_analysis_lag_seconds", "gauge",
             "How far the ECG analysis is behind the frames stored (0 when it keeps up).", [({}, ecg.get("lag_s", 0.0))])
    e.metric("vitalgate_ecg_analysis_backlog_frames", "gauge", "ECG frames stored and not analysed yet.",
             [({}, ecg.get("backlog_frames", 0))])
    e.metric("vitalgate_ecg_analysis_lagging", "gauge",
             "1 while the analysis is more than lag_warn_s behind (the status's ecg_analysis_lagging).",
             [({}, 1 if ecg.get("condition") else 0)])
    if "restarts" in ecg:
        e.metric("vitalgate_ecg_worker_restarts_total", "counter", "ECG analysis worker processes restarted.",
                 [({}, ecg["restarts"])])
    e.metric("vitalgate_console_live_clients", "gauge", "Open doctor's pages receiving live alerts.",
             [({}, live_clients)])
    return e.text()


def health(src: ConsoleSources) -> tuple[int, dict[str, Any]]:
    """200 while the gateway can take readings and alerts (storage writable, not stopping); 503 otherwise.
    A lost broker connection is reported but is not unhealthy: the gateway reconnects by itself."""
    fwd = src.live.forwarding_status()
    storage_ok = bool(fwd["storage"].get("ok", True))
    stopping = src.stopping.is_set()
    body = {"status": "ok" if storage_ok and not stopping else "unhealthy", "clinic": src.clinic,
            "mqtt_connected": src.live.mqtt_connected(), "storage_ok": storage_ok, "stopping": stopping}
    return (200 if body["status"] == "ok" else 503), body
