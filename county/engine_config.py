"""`vitalgate county-engine`: the NATS server configs of the county cluster and the clinics' `uplink:` sections.

For each server K (the order of `engine.nats`) it writes into DIR:

* ``nats-K.conf`` -- run as ``nats-server -c DIR/nats-K.conf``: client listener, JetStream with its
  storage under ``DIR/data-K``, the cluster routes to the other servers, the MQTT listener on
  ``engine.mqtt[K]`` (its internal streams replicated like ours) and the account's subject mappings
  that split what clinics uplink into ``partitions`` partitions (see `uplink_mappings`);
* ``uplink-K.yaml`` -- ``{uplink: {...}}``, what a clinic gateway merges into its config to reach
  the county first through server K (`uplink_section`).

Streams, consumers and the lease bucket are created by `vitalgate county` (county/engine.py),
idempotently, before the first message is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from county.config import CountyConfig

# What clinics uplink (the gateway's MQTT topics with '/' read as '.') and where the mapping puts it.
# Readings split by clinic and patient; a clinic's alerts and status stay in one partition per clinic,
# so an alert's transitions (which move between tier topics) and a status followed by its last will
# keep their order.
PARTITIONED_PREFIX = "vgp"


def uplink_mappings(partitions: int) -> dict[str, str]:
    p = PARTITIONED_PREFIX
    return {
        "vg.*.patient.*.reading": f"{p}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.reading.{{{{wildcard(2)}}}}",
        "vg.*.alert.*": f"{p}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.alert.{{{{wildcard(2)}}}}",
        "vg.*.status": f"{p}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.status",
    }


def _q(text: str) -> str:
    return json.dumps(text)  # a NATS config string (the format takes JSON-style quoted strings)


def server_name(cfg: CountyConfig, k: int) -> str:
    return f"{cfg.county}-{k + 1}"


def nats_conf(cfg: CountyConfig, k: int, out: Path) -> str:
    e = cfg.engine
    host, port = e.client(k)
    rhost, rport = e.route(k)
    routes = [f"nats-route://{h}:{p}" for h, p in (e.route(j) for j in range(len(e.nats))) if (h, p) != (rhost, rport)]
    lines = [
        f"# written by vitalgate county-engine for county {cfg.county}: server {k + 1} of {len(e.nats)}",
        f"server_name: {_q(server_name(cfg, k))}",
        f"listen: {_q(f'{host}:{port}')}",
        "",
        "jetstream {",
        f"  store_dir: {_q(str((out / f'data-{k + 1}').resolve()))}",
        "}",
        "",
    ]
    if len(e.nats) > 1:
        lines += [
            "cluster {",
            f"  name: {_q(cfg.county)}",
            f"  listen: {_q(f'{rhost}:{rport}')}",
            "  routes: [" + ", ".join(_q(r) for r in routes) + "]",
            "}",
            "",
        ]
    listener = e.mqtt_listener(k)
    if listener is not None:
        mh, mp = listener
        replicas = min(e.replicas, len(e.nats))
        lines += [
            "# Clinics on today's MQTT uplink land here (MQTT 3.1.1, QoS 1). Its session and retained-message",
            "# streams are replicated like ours, so losing one server leaves them a quorum.",
            "mqtt {",
            f"  listen: {_q(f'{mh}:{mp}')}",
            f"  stream_replicas: {replicas}",
            f"  consumer_replicas: {replicas}",
            '  ack_wait: "30s"',
            "}",
            "",
        ]
    lines.append(f"# What clinics uplink, split into {cfg.partitions} partitions (county/engine_config.py).")
    lines.append("mappings = {")
    for src, dst in uplink_mappings(cfg.partitions).items():
        lines.append(f"  {_q(src)}: {_q(dst)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def uplink_section(cfg: CountyConfig, k: int, native: bool = True) -> dict:
    """The `uplink:` mapping a clinic gateway merges to reach the county first through server K.

    `host`/`port`: server K's MQTT listener (today's uplink). `nats` (when the gateway takes it):
    every server's client URL, server K first -- the native uplink fails over along that list."""
    e = cfg.engine
    listener = e.mqtt_listener(k)
    if listener is None:
        raise ValueError("engine.mqtt is empty: a clinic's uplink needs the servers' MQTT listeners")
    host, port = listener
    section: dict = {"host": host, "port": port}
    if native:
        section["nats"] = [e.nats[k]] + [u for j, u in enumerate(e.nats) if j != k]
    return {"uplink": section}


def write(cfg: CountyConfig, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(len(cfg.engine.nats)):
        conf = out / f"nats-{k + 1}.conf"
        conf.write_text(nats_conf(cfg, k, out), encoding="utf-8")
        written.append(conf)
        if cfg.engine.mqtt:
            up = out / f"uplink-{k + 1}.yaml"
            up.write_text(
                f"# written by vitalgate county-engine: merge into a clinic gateway's config to reach "
                f"county {cfg.county} first through server {k + 1}\n"
                + yaml.safe_dump(uplink_section(cfg, k), sort_keys=False),
                encoding="utf-8",
            )
            written.append(up)
    return written
