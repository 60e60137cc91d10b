"""`vitalgate demo`: an embedded broker, simulated patients and the whole pipeline.

The broker is amqtt, in-process, so the demo needs nothing beyond pip.
Device clocks run 10x faster than the wall (a 60-s demo covers 10 minutes of
patient time, enough for a confirmed BP crisis) and the ack timeouts are
shortened so escalation shows within a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiomqtt

from box.app import Gateway
from box.config import GatewayConfig
from simulators.mqtt_consume import consume_until
from simulators.scenario import Scenario, play

log = logging.getLogger("vitalgate.demo")

TIME_SCALE = 10.0
DEMO_ESCALATION = {
    "ack_timeout": {"village": "40s", "township": "15s", "county": "12s"},
    "high_severity_village": "30s",
    "conditions": {"hypoglycemia_severe": {"at": "township", "timeout": "20s", "to": "emergency"}},
}
TIER_LABEL = {
    "village": "村医 village",
    "township": "乡镇 township",
    "county": "县 county",
    "emergency": "120 emergency",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _console_port(preferred: int = 8080) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


async def start_embedded_broker(port: int):  # type: ignore[no-untyped-def]
    from stream.extras import need

    Broker = need("amqtt.broker", "demo", "the demo's embedded MQTT broker").Broker

    # The gateway's critical session asks for MQTT 5 first (box/app.py) and amqtt, a 3.1.1 broker, logs each
    # such attempt as an invalid connection before the session falls back: noise for a demo's reader.
    logging.getLogger("amqtt.broker").setLevel(logging.ERROR)

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 200}},
        "sys_interval": 0,
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    broker = Broker(config)
    await broker.start()
    return broker


def demo_config(port: int, patients: int, storage: Path, http: dict | None = None) -> GatewayConfig:
    pts = []
    for i in range(1, patients + 1):
        devs = [{"id": f"bp-{i:04d}", "kind": "blood_pressure"}, {"id": f"glu-{i:04d}", "kind": "glucose"}]
        if i % 4 == 0 or i == patients:
            devs.append({"id": f"ecg-{i:04d}", "kind": "ecg"})
        if i % 4 in (3, 0):  # a handheld ECG: the village doctor's 30-s AF screening
            devs.append({"id": f"hh-{i:04d}", "kind": "ecg_handheld"})
        pts.append({"id": f"p-{i:04d}", "devices": devs})
    return GatewayConfig.model_validate(
        {
            "clinic": "demo-clinic",
            "broker": {"host": "127.0.0.1", "port": port},
            "storage": {"path": str(storage)},
            "patients": pts,
            "escalation": DEMO_ESCALATION,
            "status": {"interval": "5s"},
            **({"http": http} if http else {}),
        }
    )


def demo_scenario(config: GatewayConfig, duration_s: float, seed: int) -> Scenario:
    """Normal patients plus a deteriorating few: crisis BP, severe and mild hypoglycaemia, AF."""
    rng = random.Random(seed)
    span = duration_s * TIME_SCALE
    devices: dict[str, dict] = {}
    timeline: list[dict] = []
    for n, p in enumerate(config.patients):
        role = n % 4
        for d in p.devices:
            if d.ble is not None:
                continue  # a BLE device (`demo --ble`): played by simulators/ble, not over MQTT
            devices[d.id] = {"kind": d.kind.value, "gatt": d.kind.value == "glucose" and n % 2 == 1}
            if d.kind.value == "blood_pressure":
                base_s, base_d = rng.randint(118, 138), rng.randint(72, 86)
                for k, t in enumerate(range(int(rng.uniform(5, 40)), int(span), 150)):
                    sys_, dia = base_s + rng.randint(-6, 6), base_d + rng.randint(-4, 4)
                    if role == 0 and k in (1, 2):  # hypertensive crisis, confirmed by a repeat
                        sys_, dia = 186 + rng.randint(0, 8), 116 + rng.randint(0, 6)
                    timeline.append(
                        {
                            "at": f"{t}s",
                            "device": d.id,
                            "blood_pressure": {"systolic": sys_, "diastolic": dia, "pulse": rng.randint(62, 90)},
                        }
                    )
            elif d.kind.value == "glucose":
                for k, t in enumerate(range(int(rng.uniform(20, 60)), int(span), 200)):
                    g = round(rng.uniform(5.0, 8.5), 1)
                    if role == 1 and k == 0:
                        g = 2.6  # severe hypoglycaemia
                    if role == 2 and k == 0:
                        g = 3.5  # mild: the village doctor gives sugar
                    if role == 2 and k == 2:
                        g = 18.4
                    timeline.append({"at": f"{t}s", "device": d.id, "glucose": {"mmol_l": g, "meal": "casual"}})
            elif d.kind.value == "ecg_handheld":  # one screening strip; AF for the AF patients (role 3)
                af = role == 3
                timeline.append(
                    {
                        "at": f"{int(span / 3) + 7 * n}s",
                        "device": d.id,  # (no rng draw: the rest stays as it was)
                        "strip": {"rhythm": "af" if af else "sinus", "hr": 112 if af else 70, "seconds": 30},
                    }
                )
            elif d.kind.value == "ecg":
                rhythm = "af" if role == 3 else "sinus"
                timeline.append(
                    {
                        "at": "0s",
                        "device": d.id,
                        "ecg": {"rhythm": rhythm, "hr": 118 if rhythm == "af" else 72, "duration": f"{int(span)}s"},
                    }
                )
    # A device misbehaving: the gateway must reject it and carry on.
    first_bp = next(d.id for d in config.patients[0].devices if d.kind.value == "blood_pressure")
    timeline.append({"at": "33s", "device": first_bp, "raw": '{"kind": "blood_pressure", "systolic": "high"}'})
    timeline.append({"at": "47s", "device": first_bp, "blood_pressure": {"systolic": 400, "diastolic": 90}})
    return Scenario.model_validate({"name": "demo", "time_scale": TIME_SCALE, "devices": devices, "timeline": timeline})


async def run_demo(duration: float, patients: int, seed: int, ble: bool = False) -> int:
    port = free_port()
    t_start = time.monotonic()
    broker = await start_embedded_broker(port)
    fleet = None
    with tempfile.TemporaryDirectory(prefix="vitalgate-demo-") as tmp:
        # The village doctor's console (console/web) on 8080 if free; a doctor's account with a fresh
        # password each run (the API token is another fresh secret, not printed).
        from console.accounts import hash_password

        password = secrets.token_urlsafe(12)
        http = {
            "bind": "127.0.0.1",
            "port": _console_port(),
            "token": secrets.token_urlsafe(18),
            "accounts": [{"name": "doctor", "role": "doctor", "password_hash": hash_password(password)}],
        }
        config = demo_config(port, patients, Path(tmp), http=http)
        if ble:  # BLE patients: bleak's BlueZ backend against the mock BlueZ (simulators/ble)
            from simulators.ble.fleet import demo_patients, start_demo_fleet

            fleet = await start_demo_fleet()
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = fleet.address
            config = GatewayConfig.model_validate(
                {
                    **config.model_dump(mode="json", exclude_none=True),
                    "patients": [*config.model_dump(mode="json", exclude_none=True)["patients"], *demo_patients()],
                }
            )
        gateway = Gateway(config)
        gw_task = asyncio.create_task(gateway.run(install_signals=False))
        await asyncio.wait_for(gateway.ready.wait(), 10)
        print(
            f"vitalgate demo: embedded broker on 127.0.0.1:{port}, clinic demo-clinic, {patients} patients, "
            f"{duration:.0f} s (device clocks x{TIME_SCALE:g})"
        )
        print(
            f"doctor's console 村医工作台: http://127.0.0.1:{http['port']}/  account 账号: doctor  "
            f"password 密码: {password}"
        )
        print(f"{'time':>6}  {'tier':<15} {'patient':<8} {'condition':<22} state")
        seen: list[dict] = []
        stop = asyncio.Event()
        printer = asyncio.create_task(_print_alerts(port, seen, stop, t_start))
        scenario = demo_scenario(config, duration, seed)
        player = asyncio.create_task(play(scenario, "127.0.0.1", port, config.clinic))
        try:
            await asyncio.wait_for(asyncio.shield(player), timeout=duration)
        except TimeoutError:
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
        await asyncio.sleep(1.0)
        stop.set()
        await printer
        status = gateway.status()
        gateway.request_stop()
        await gw_task
        if fleet is not None:
            await fleet.stop()
        elapsed = time.monotonic() - t_start
    try:
        await broker.shutdown()
    except asyncio.CancelledError:  # amqtt cancels its own broadcast loop on shutdown
        pass
    _summary(seen, status, elapsed)
    return 0


async def _print_alerts(
    port: int, seen: list[dict], stop: asyncio.Event, t0: float, clinic: str = "demo-clinic"
) -> None:
    acked: set[str] = set()
    prefix = "" if clinic == "demo-clinic" else f"{clinic}/"  # `demo --county` runs two clinics
    async with aiomqtt.Client("127.0.0.1", port, identifier="demo-village-doctor") as client:
        await client.subscribe(f"vg/{clinic}/alert/+", qos=1)

        async def show(msg: aiomqtt.Message) -> None:
            a = json.loads(bytes(msg.payload))
            topic_tier = str(msg.topic).rsplit("/", 1)[-1]
            seen.append({**a, "topic_tier": topic_tier})
            esc = (
                f" (escalated from {a['escalated_from']})" if a.get("escalated_from") and a["state"] == "firing" else ""
            )
            print(
                f"{time.monotonic() - t0:6.1f}  {TIER_LABEL.get(topic_tier, topic_tier):<15} "
                f"{prefix + a['patient_id']:<{8 + len(prefix)}} "
                f"{a['condition']:<22} {a['state']}{esc}",
                flush=True,
            )
            # The village doctor acknowledges what reaches the village tier.
            if a["tier"] == "village" and a["state"] == "firing" and a["alert_id"] not in acked:
                acked.add(a["alert_id"])
                await client.publish(
                    f"vg/{clinic}/ack", json.dumps({"alert_id": a["alert_id"], "by": "village-doctor"}), qos=1
                )

        await consume_until(client, stop, show)


def _summary(seen: list[dict], status: dict, elapsed: float) -> None:
    firing = [a for a in seen if a["state"] == "firing"]
    by_tier = Counter(a["topic_tier"] for a in firing)
    by_cond = Counter(a["condition"] for a in firing)
    c = status["counters"]
    print("\nsummary")
    print("  alerts sent (firing, per tier topic): " + ", ".join(f"{t} {by_tier.get(t, 0)}" for t in TIER_LABEL))
    print("  conditions: " + ", ".join(f"{k} {v}" for k, v in sorted(by_cond.items())))
    print(
        f"  acknowledged: {sum(1 for a in seen if a['state'] == 'acknowledged')}, "
        f"escalations: {c['alerts'].get('escalated', 0)}"
    )
    print(f"  readings accepted: {c['accepted_total']} {json.dumps(c['accepted'])}")
    print(f"  readings rejected: {c['rejected_total']} {json.dumps(c['rejected'])}")
    print(f"  wall time {elapsed:.1f} s")
