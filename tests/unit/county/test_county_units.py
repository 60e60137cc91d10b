"""The county centre's pieces without a cluster: its config and exit codes, what county-engine writes,
how uplinked messages are read and stored once, and how partitions are shared and taken over."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from county.config import ConfigError, load_config_text
from county.engine import EngineUnavailable
from county.engine_config import uplink_mappings, write
from county.partitions import PartitionSharing
from county.store import CountyStore
from county.uplinked import AlertIn, ReadingIn, StatusIn, Unreadable, parse
from tests.support.county import CLI_MODULE, REPO, alert, reading

GOOD = """\
county: demo-county
engine:
  nats: ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
  mqtt: ["127.0.0.1:1885", "127.0.0.1:1886", "127.0.0.1:1887"]
partitions: 8
storage:
  path: ./county-var
http: {bind: 127.0.0.1, port: 8090, token: CHANGE-ME}
"""


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", CLI_MODULE, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------- config


def test_the_contract_example_is_a_valid_config() -> None:
    cfg = load_config_text(GOOD)
    assert cfg.county == "demo-county" and cfg.partitions == 8 and cfg.engine.replicas == 3
    assert cfg.engine.route(0) == ("127.0.0.1", 6222)  # client port + 2000 by default


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(partitions=0), "partitions"),
        (lambda d: d["engine"].update(mqtt=["127.0.0.1:1885"]), "engine"),
        (lambda d: d["engine"].update(nats=["http://x:1"]), "engine.nats"),
        (lambda d: d.update(county="a county"), "county"),
        (lambda d: d["http"].update(port="eighty"), "http.port"),
        (lambda d: d.update(partitons=8), "partitons"),
        (lambda d: d.pop("engine"), "engine"),
    ],
)
def test_a_bad_config_names_the_field(edit, field: str) -> None:
    data = yaml.safe_load(GOOD)
    edit(data)
    with pytest.raises(ConfigError) as exc:
        load_config_text(yaml.safe_dump(data), "c.yaml")
    assert any(p.field == field for p in exc.value.problems), exc.value.problems


def test_county_exits_2_on_a_bad_config_with_the_field_named(tmp_path: Path) -> None:
    bad = tmp_path / "county.yaml"
    bad.write_text(GOOD.replace("partitions: 8", "partitions: -3"))
    out = run_cli("county", "--config", str(bad))
    assert out.returncode == 2
    assert f"{bad}:5: partitions:" in out.stderr
    out = run_cli("county-engine", "--config", str(bad), "--out", str(tmp_path / "eng"))
    assert out.returncode == 2 and "partitions" in out.stderr


def test_county_stops_cleanly_on_sigterm_even_with_no_server_up(tmp_path: Path) -> None:
    cfg = tmp_path / "county.yaml"
    cfg.write_text(
        GOOD.replace("./county-var", str(tmp_path / "var"))
        .replace("4222", "1")
        .replace("4223", "2")
        .replace("4224", "3")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", CLI_MODULE, "county", "--config", str(cfg), "--http-port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


# ---------------------------------------------------------------- county-engine


def test_county_engine_writes_one_server_config_and_one_uplink_per_server(tmp_path: Path) -> None:
    cfg_path = tmp_path / "county.yaml"
    cfg_path.write_text(GOOD)
    out = run_cli("county-engine", "--config", str(cfg_path), "--out", str(tmp_path / "eng"))
    assert out.returncode == 0, out.stderr
    for k, (client, mqtt) in enumerate([(4222, 1885), (4223, 1886), (4224, 1887)], start=1):
        conf = (tmp_path / "eng" / f"nats-{k}.conf").read_text()
        assert f'server_name: "demo-county-{k}"' in conf and f'listen: "127.0.0.1:{client}"' in conf
        assert str((tmp_path / "eng" / f"data-{k}").resolve()) in conf
        assert f'listen: "127.0.0.1:{mqtt}"' in conf and "stream_replicas: 3" in conf
        assert "partition(8,1,2)" in conf
        routes = [f"nats-route://127.0.0.1:{p}" for p in (6222, 6223, 6224) if p != client + 2000]
        assert all(r in conf for r in routes) and f"nats-route://127.0.0.1:{client + 2000}" not in conf
        up = yaml.safe_load((tmp_path / "eng" / f"uplink-{k}.yaml").read_text())
        # the native uplink (this server first, then the others) beside the MQTT listener it replaces
        urls = [f"nats://127.0.0.1:{p}" for p in (4222, 4223, 4224)]
        assert up == {
            "uplink": {"host": "127.0.0.1", "port": mqtt, "nats": [urls[k - 1]] + [u for u in urls if u != urls[k - 1]]}
        }


def test_a_gateway_config_merges_the_uplink_section_as_it_is(tmp_path: Path) -> None:
    from box.config import load_config_text as load_gateway

    cfg = load_config_text(GOOD)
    write(cfg, tmp_path)
    gateway = {"clinic": "c1", "patients": [{"id": "p-0001", "devices": [{"id": "bp-0001", "kind": "blood_pressure"}]}]}
    gateway.update(yaml.safe_load((tmp_path / "uplink-2.yaml").read_text()))
    g = load_gateway(yaml.safe_dump(gateway))
    assert (g.uplink.host, g.uplink.port) == ("127.0.0.1", 1886)


def test_the_mapping_keeps_a_clinics_alerts_and_status_in_one_partition() -> None:
    m = uplink_mappings(8)
    assert m["vg.*.patient.*.reading"].startswith("vgp.{{partition(8,1,2)}}.")
    assert "partition(8,1)" in m["vg.*.alert.*"] and "partition(8,1)" in m["vg.*.status"]


# ---------------------------------------------------------------- reading what was uplinked


def test_uplinked_messages_are_read_by_their_subject() -> None:
    _, _, body = reading("c1", "p1", 7)
    r = parse("vgp.3.c1.reading.p1", body.encode())
    assert isinstance(r, ReadingIn) and (r.clinic, r.patient_id, r.device_id, r.seq) == ("c1", "p1", "glu-p1", 7)
    _, payload = alert("c1", "a1", "p1", tier="emergency")
    a = parse("vgp.0.c1.alert.emergency", payload.encode())
    assert isinstance(a, AlertIn) and (a.tier, a.state) == ("emergency", "firing")
    will = parse("vgp.1.c1.status", b'{"clinic": "c1", "online": false}')
    assert isinstance(will, StatusIn) and will.will and not will.online
    assert isinstance(parse("vgp.1.c1.reading.p1", b"{not json"), Unreadable)
    assert isinstance(parse("vgp.1.c1.reading.p1", b'{"kind": "glucose"}'), Unreadable)


def test_one_measurement_has_one_key_however_its_time_is_spelled() -> None:
    _, _, body = reading("c1", "p1", 7)
    other = json.loads(body)
    other["ts"] = "2026-03-14T23:00:07Z"  # the same instant as 07:00:07+08:00
    assert (
        parse("vgp.3.c1.reading.p1", body.encode()).key == parse("vgp.3.c1.reading.p1", json.dumps(other).encode()).key
    )


def test_the_store_keeps_one_row_per_measurement_and_each_alerts_latest_state(tmp_path: Path) -> None:
    store = CountyStore(tmp_path)
    rows = [parse(f"vgp.0.c1.reading.p{i % 2}", reading("c1", f"p{i % 2}", i)[2].encode()) for i in range(10)]
    first = store.store_batch([(r, None, i) for i, r in enumerate(rows)])
    again = store.store_batch([(r, "dup", 100 + i) for i, r in enumerate(rows[:4])])
    assert (first["readings"], again["readings"], again["reading_duplicates"]) == (10, 0, 4)
    assert [r["seq"] for r in store.readings("c1", "p0")] == [0, 2, 4, 6, 8]
    fire = parse("vgp.0.c1.alert.county", alert("c1", "a1", "p1")[1].encode())
    ack = parse(
        "vgp.0.c1.alert.county",
        alert("c1", "a1", "p1", state="acknowledged", updated_at="2026-03-15T07:36:00.000+08:00")[1].encode(),
    )
    store.store_batch([(ack, None, 201)])
    store.store_batch([(fire, None, 200), (fire, None, 202)])  # an older transition arriving late, twice
    assert store.alert("a1")["state"] == "acknowledged"
    assert [h["state"] for h in store.alert_history("a1")] == ["firing", "acknowledged"]
    weekly = store.weekly(0)
    assert weekly["alerts_by_clinic_tier"] == [{"clinic": "c1", "tier": "county", "alerts": 1}]
    assert weekly["time_to_ack_by_tier"]["county"]["median_s"] == 360.0
    assert store.alerts(active_only=True)[0]["alert_id"] == "a1"


def test_clinic_health_shows_the_last_will_and_an_overdue_status(tmp_path: Path) -> None:
    store = CountyStore(tmp_path)
    up = parse(
        "vgp.1.c1.status",
        b'{"clinic": "c1", "online": true, "updated_at": "x", '
        b'"uplink": {"connected": true, "pending_alerts": 1, "pending_telemetry": 40}}',
    )
    store.store_batch(
        [(up, None, 1), (parse("vgp.1.c2.status", b'{"clinic": "c2", "online": true, "updated_at": "x"}'), None, 2)]
    )
    store.store_batch([(parse("vgp.1.c1.status", b'{"clinic": "c1", "online": false}'), None, 3)])
    store.store_batch([(up, None, 1)])  # a redelivered older status does not undo the will
    now = time.time()
    by = {c["clinic"]: c for c in store.clinics(offline_after_s=60, now=now)}
    assert by["c1"]["offline_reason"] == "last_will" and by["c2"]["online"]
    later = {c["clinic"]: c for c in store.clinics(offline_after_s=60, now=now + 120)}
    assert later["c2"]["offline_reason"] == "status_overdue"
    store.store_batch([(up, None, 4)])
    assert store.clinics(60)[0]["backlog"] == {"alerts": 1, "telemetry": 40, "connected": True}


# ---------------------------------------------------------------- sharing partitions


class MemoryLeases:
    """The lease bucket in memory, with a clock the test moves; `down` makes every call fail."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.now = 0.0
        self.entries: dict[str, tuple[str, float, int]] = {}
        self.rev = 0
        self.down = False

    def _live(self, key: str):
        e = self.entries.get(key)
        if e is not None and self.now - e[1] > self.ttl:
            del self.entries[key]
            return None
        return e

    def _check(self) -> None:
        if self.down:
            raise EngineUnavailable("down")

    def _put(self, key: str, value: str) -> int:
        self.rev += 1
        self.entries[key] = (value, self.now, self.rev)
        return self.rev

    async def heartbeat(self, member: str) -> None:
        self._check()
        self._put(f"m.{member}", "1")

    async def snapshot(self):
        self._check()
        keys = [k for k in list(self.entries) if self._live(k)]
        return sorted(k[2:] for k in keys if k.startswith("m.")), {
            int(k[2:]): self.entries[k][0] for k in keys if k.startswith("p.")
        }

    async def claim(self, partition: int, member: str) -> bool:
        self._check()
        if self._live(f"p.{partition}"):
            return False
        self._put(f"p.{partition}", member)
        return True

    async def renew(self, partition: int, member: str) -> bool:
        self._check()
        e = self._live(f"p.{partition}")
        if e is None or e[0] != member:
            return False
        self._put(f"p.{partition}", member)
        return True

    async def leave(self, member: str) -> None:
        self._check()
        self.entries.pop(f"m.{member}", None)

    async def release(self, partition: int, member: str) -> None:
        self._check()
        if (e := self._live(f"p.{partition}")) and e[0] == member:
            del self.entries[f"p.{partition}"]


def sharing(leases: MemoryLeases, member: str, reading: dict[int, str]) -> PartitionSharing:
    async def gain(k: int) -> None:
        assert k not in reading, f"partition {k} read by {reading[k]} and {member} at once"
        reading[k] = member

    async def lose(k: int) -> None:
        reading.pop(k, None)

    return PartitionSharing(leases, 8, member, leases.ttl, gain, lose, clock=lambda: leases.now)


async def rounds(members: list[PartitionSharing], leases: MemoryLeases, n: int) -> None:
    for _ in range(n):
        for m in members:
            await m.tick()
        await asyncio.sleep(0)  # let hand-backs finish
        leases.now += leases.ttl / 3


async def test_partitions_are_shared_out_and_a_dead_members_are_taken_over() -> None:
    leases = MemoryLeases(ttl=3.0)
    reading: dict[int, str] = {}
    a, b, c = (sharing(leases, name, reading) for name in "abc")
    await rounds([a], leases, 2)
    assert sorted(a.owned) == list(range(8))
    await rounds([a, b], leases, 4)
    assert (len(a.owned), len(b.owned)) == (4, 4) and not a.owned & b.owned
    await rounds([a, b, c], leases, 6)
    assert sorted(len(m.owned) for m in (a, b, c)) == [2, 3, 3]
    assert len(reading) == 8
    # c dies (stops ticking): after the TTL its partitions are free and a and b take them.
    dead = set(c.owned)
    for k in dead:
        reading.pop(k)  # its readers died with it
    await rounds([a, b], leases, 6)
    assert dead <= a.owned | b.owned and len(a.owned | b.owned) == 8
    assert (len(a.owned), len(b.owned)) == (4, 4)


async def test_a_member_keeps_reading_while_the_lease_bucket_is_unreachable() -> None:
    leases = MemoryLeases(ttl=3.0)
    reading: dict[int, str] = {}
    a = sharing(leases, "a", reading)
    await rounds([a], leases, 2)
    leases.down = True
    await rounds([a], leases, 12)  # 12 s without the bucket (a leader election, a lost server)
    assert sorted(a.owned) == list(range(8))
    leases.down = False
    await rounds([a], leases, 2)  # the expired leases are claimed back, the readers never stopped
    assert sorted(a.owned) == list(range(8)) and len(reading) == 8


async def test_a_clean_stop_gives_the_partitions_back_at_once() -> None:
    leases = MemoryLeases(ttl=3.0)
    reading: dict[int, str] = {}
    a, b = sharing(leases, "a", reading), sharing(leases, "b", reading)
    await rounds([a, b], leases, 4)
    await a.release_all()
    await b.tick()
    assert sorted(b.owned) == list(range(8))


def test_the_uplink_section_lists_the_servers_for_a_native_uplink_from_server_k_first() -> None:
    from county.engine_config import uplink_section

    cfg = load_config_text(GOOD)
    up = uplink_section(cfg, 1, native=True)["uplink"]
    assert up["nats"] == ["nats://127.0.0.1:4223", "nats://127.0.0.1:4222", "nats://127.0.0.1:4224"]
    assert (up["host"], up["port"]) == ("127.0.0.1", 1886)
