"""`/metrics` in the Prometheus text exposition format (0.0.4), and `/healthz`.

Written by `prometheus_client` (exact numbers past a million, the process metrics) from a collector that
reads the gateway's own counters (its `ConsoleSources`) at scrape time. No label carries a patient id: device ids and
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
- `vitalgate_ecg_analysis_{lag_seconds,backlog_frames,lagging}`, `vitalgate_ecg_worker_restarts_total`
- `process_*` (resident memory, CPU seconds, open files) and `python_info` from the library
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from console.web.sources import ConsoleSources
from stream.models import AlertState, Tier

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Samples = Iterable[tuple[dict[str, str], float]]


def _family(kind: str, name: str, help_: str, samples: Samples) -> Metric:
    """One metric family from (labels, value) pairs; every sample of a family has the same label names."""
    rows = list(samples)
    names = list(rows[0][0]) if rows else []
    fam: CounterMetricFamily | GaugeMetricFamily = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
        name, help_, labels=names
    )
    for labels, value in rows:
        fam.add_metric([str(labels[k]) for k in names], float(value))
    return fam


class GatewayCollector(Collector):
    """The gateway's own counters, read from its `ConsoleSources` at scrape time (no second registry
    to keep in step with them). `devices`: the console's device rows (id, kind, link, connected,
    last_seen_s)."""

    def __init__(self, src: ConsoleSources, devices: list[dict[str, Any]], live_clients: int) -> None:
        self.src, self.devices, self.live_clients = src, devices, live_clients

    def collect(self) -> Iterator[Metric]:
        src, devices = self.src, self.devices
        c = src.live.counters
        yield _family(
            "counter",
            "vitalgate_readings_total",
            "Readings accepted and stored, by kind.",
            (({"kind": k, "result": "accepted"}, v) for k, v in sorted(c.accepted.items())),
        )
        yield _family(
            "counter",
            "vitalgate_readings_rejected_total",
            "Payloads refused, by reason.",
            (({"reason": k}, v) for k, v in sorted(c.rejected.items())),
        )
        yield _family(
            "gauge",
            "vitalgate_queue_depth",
            "Readings waiting in the per-patient queues.",
            [({}, src.live.queue_depth())],
        )
        outboxes: list[tuple[dict[str, str], float]] = [({"outbox": "alerts_mqtt"}, len(src.alerts.pending()))]
        fwd = src.live.forwarding_status()
        if "uplink" in fwd:
            outboxes.append(({"outbox": "uplink_alerts"}, fwd["uplink"].get("pending_alerts", 0)))
            outboxes.append(({"outbox": "uplink_telemetry"}, fwd["uplink"].get("pending_telemetry", 0)))
        if "tsdb" in fwd:
            outboxes.append(({"outbox": "tsdb"}, fwd["tsdb"].get("pending", 0)))
        outboxes.append(({"outbox": "unstored_readings"}, fwd["storage"].get("held_unstored", 0)))
        yield _family("gauge", "vitalgate_outbox_pending", "Rows waiting to be sent, per outbox.", outboxes)
        counts = {(t.value, s.value): 0 for t in Tier for s in (AlertState.FIRING, AlertState.ACKNOWLEDGED)}
        for st in src.alerts.active():
            key = (st.alert.tier.value, st.alert.state.value)
            counts[key] = counts.get(key, 0) + 1
        yield _family(
            "gauge",
            "vitalgate_alerts",
            "Open alerts by tier and state.",
            (({"tier": t, "state": s}, n) for (t, s), n in sorted(counts.items())),
        )
        yield _family(
            "counter",
            "vitalgate_alert_events_total",
            "Dispatcher transitions since start.",
            (({"event": k}, v) for k, v in sorted(src.desk.counters.items())),
        )
        yield _family(
            "gauge",
            "vitalgate_device_connected",
            "1 if the device is connected (BLE) or has reported within its expected interval (MQTT).",
            (
                ({"device": d["device_id"], "kind": d["kind"], "link": d["link"]}, 1 if d["connected"] else 0)
                for d in devices
            ),
        )
        yield _family(
            "gauge",
            "vitalgate_device_last_seen_seconds",
            "Seconds since the device's last accepted reading.",
            (({"device": d["device_id"]}, d["last_seen_s"]) for d in devices if d["last_seen_s"] is not None),
        )
        yield _family(
            "gauge",
            "vitalgate_mqtt_connected",
            "1 while the gateway is connected to the local broker.",
            [({}, 1 if src.live.mqtt_connected() else 0)],
        )
        if "uplink" in fwd:
            yield _family(
                "gauge",
                "vitalgate_uplink_connected",
                "1 while the county uplink is connected.",
                [({}, 1 if fwd["uplink"].get("connected") else 0)],
            )
        ecg = src.live.ecg_analysis_status()
        yield _family(
            "gauge",
            "vitalgate_ecg_analysis_lag_seconds",
            "How far the ECG analysis is behind the frames stored (0 when it keeps up).",
            [({}, ecg.get("lag_s", 0.0))],
        )
        yield _family(
            "gauge",
            "vitalgate_ecg_analysis_backlog_frames",
            "ECG frames stored and not analysed yet.",
            [({}, ecg.get("backlog_frames", 0))],
        )
        yield _family(
            "gauge",
            "vitalgate_ecg_analysis_lagging",
            "1 while the analysis is more than lag_warn_s behind (the status's ecg_analysis_lagging).",
            [({}, 1 if ecg.get("condition") else 0)],
        )
        if "restarts" in ecg:
            yield _family(
                "counter",
                "vitalgate_ecg_worker_restarts_total",
                "ECG analysis worker processes restarted.",
                [({}, ecg["restarts"])],
            )
        yield _family(
            "gauge",
            "vitalgate_console_live_clients",
            "Open doctor's pages receiving live alerts.",
            [({}, self.live_clients)],
        )


def render_metrics(src: ConsoleSources, devices: list[dict[str, Any]], live_clients: int) -> str:
    """The gateway's families plus the library's process (RSS, CPU, open files) and Python ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(src, devices, live_clients))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return generate_latest(registry).decode()


def health(src: ConsoleSources) -> tuple[int, dict[str, Any]]:
    """200 while the gateway can take readings and alerts (storage writable, not stopping); 503 otherwise.
    A lost broker connection is reported but is not unhealthy: the gateway reconnects by itself."""
    fwd = src.live.forwarding_status()
    storage_ok = bool(fwd["storage"].get("ok", True))
    stopping = src.stopping.is_set()
    body = {
        "status": "ok" if storage_ok and not stopping else "unhealthy",
        "clinic": src.clinic,
        "mqtt_connected": src.live.mqtt_connected(),
        "storage_ok": storage_ok,
        "stopping": stopping,
    }
    return (200 if body["status"] == "ok" else 503), body
