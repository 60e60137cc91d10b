"""A power cut, not a SIGKILL: an acknowledged reading survives it (issue 16, item 3).

The gateway acknowledges a reading to the clinic broker (MQTT PUBACK) only after the commit that
stores it; the broker then forgets the reading.  A SIGKILL cannot show whether that commit is
durable: the kernel's page cache keeps every write, synced or not.  The power-cut layer
(`tests/powercut/`) drops what was never synced, as a power cut on a disk that honours fsync
does, and these tests run Mosquitto + `vitalgate run` under it:

1. the layer itself: an unsynced write is lost in the cut, a synced one survives (a layer that
   did nothing would fail this test);
2. the product: readings published at QoS 1, the gateway killed right after its last PUBACK, the
   power cut, the gateway restarted on what is left: every acknowledged reading is stored, once;
3. the same run with the reading store at ``synchronous=NORMAL`` loses acknowledged readings:
   FULL is what keeps them.

What the layer models and what it does not: docs/power-cut.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from simulators.stack import REPO, Broker, StackError, stored_keys
from stream.store import ReadingStore
from tests.powercut import build_shim, cut_power, shim_env
from tests.support.store_forward import CLINIC, DevicePublisher, bp, ts_at, wait_until, write_config

BATCH = 100  # readings per gateway run; one run ends cleanly, the next with a SIGKILL and a cut
GATEWAY_ID = f"vitalgate-{CLINIC}"
TOPIC = f"vg/{CLINIC}/device/bp-0001/reading"
SENTINEL = 10_000  # the seq of the reading sent after the restart

# `vitalgate run` with the reading store opened as before issue 16 (synchronous=NORMAL); every other
# file as the product opens it.  The seam is `stream.store.open_sqlite`, looked up when the store opens.
NORMAL_STORE_RUN = textwrap.dedent("""
    import sys
    import stream.store
    durable_open = stream.store.open_sqlite
    def open_sqlite(path, durable=False):
        return durable_open(path, durable and path.name != "readings.db")
    stream.store.open_sqlite = open_sqlite
    from box.cli import main
    sys.exit(main())
""")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shim(tmp_path_factory.mktemp("powercut"))


# ---------------------------------------------------------------- the layer itself

SELF_TEST = textwrap.dedent("""
    import os, signal, sys
    tree = sys.argv[1]

    def write(name, data, sync=None):
        fd = os.open(os.path.join(tree, name), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        os.write(fd, data)
        if sync:
            sync(fd)
        os.close(fd)

    def sync_tree():
        fd = os.open(tree, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    write("synced.bin", b"kept", os.fdatasync)
    write("unsynced.bin", b"lost")
    write("recreated.bin", b"old", os.fsync)
    write("deleted.bin", b"back", os.fsync)
    sync_tree()                                # the four names are durable now
    os.unlink(os.path.join(tree, "recreated.bin"))
    write("recreated.bin", b"new")             # a new file under the old name, never synced ...
    sync_tree()                                # ... but its name is
    write("synced.bin", b"+tail")              # after the sync: lost
    os.unlink(os.path.join(tree, "deleted.bin"))  # not durable without a directory sync
    write("late.bin", b"late", os.fsync)       # content synced, name never
    write("never.bin", b"never")
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_layer_loses_unsynced_writes_and_keeps_synced_ones(tmp_path: Path, shim: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    prog = tmp_path / "writer.py"
    prog.write_text(SELF_TEST)
    r = subprocess.run([sys.executable, str(prog), str(tree)], env=shim_env(shim, tree), capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()

    # A SIGKILL alone loses nothing: the page cache has every write.
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(tree.iterdir())}

    assert files() == {
        "synced.bin": b"kept+tail",
        "unsynced.bin": b"lost",
        "recreated.bin": b"new",
        "late.bin": b"late",
        "never.bin": b"never",
    }

    cut = cut_power(tree)
    assert files() == {
        "synced.bin": b"kept",  # what its fdatasync saw; the tail is gone
        "unsynced.bin": b"",  # its name survived (directory fsync), its content never reached the disk
        "recreated.bin": b"",  # the new file, not the old file's content
        "deleted.bin": b"back",  # its deletion never became durable
    }  # late.bin, never.bin: their names never became durable
    assert sorted(cut.deleted) == ["late.bin", "never.bin"] and cut.restored == ["deleted.bin"]


def test_cut_refuses_a_tree_the_shim_never_saw(tmp_path: Path) -> None:
    """Without its records, a cut would delete everything and pass for data loss; it refuses instead."""
    (tmp_path / "tree").mkdir()
    with pytest.raises(RuntimeError, match="shim"):
        cut_power(tmp_path / "tree")


# ---------------------------------------------------------------- the product under the layer


class LoggedBroker(Broker):
    """Mosquitto logging each packet: the gateway's PUBACKs are read from its log."""

    def __init__(self, workdir: Path) -> None:
        try:
            super().__init__(workdir, "clinic")
        except StackError as exc:
            pytest.skip(str(exc))
        with self.conf.open("a") as f:
            f.write("log_type debug\n")
        self.log = self.dir / "log.txt"
        self.start()

    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def since(self, mark: int) -> str:
        with self.log.open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def gateway_acks(self, mark: int) -> int:
        """Readings the gateway acknowledged since `mark` (it is subscribed to nothing else that is published)."""
        return self.since(mark).count(f"Received PUBACK from {GATEWAY_ID} ")

    def gateway_subscribed(self, mark: int) -> bool:
        return f"Sending SUBACK to {GATEWAY_ID}" in self.since(mark)


class GatewayRun:
    """One `vitalgate run` process: under the layer or not, with the reading store FULL or NORMAL."""

    def __init__(self, cfg: Path, env: dict[str, str], normal_store: bool) -> None:
        entry = ["-c", NORMAL_STORE_RUN] if normal_store else ["-m", "box.cli"]
        with open(cfg.with_suffix(".log"), "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, "run", "--config", str(cfg)],
                cwd=REPO,
                env=dict(env, PYTHONUNBUFFERED="1"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(20)


def stored(storage: Path) -> Counter:
    """(device_id, seq) -> times stored, through the store's own query API, on a copy of the files
    (opening them runs SQLite's recovery, which must not touch what the test examines)."""
    copy = storage.parent / f"{storage.name}-read-{time.monotonic_ns()}"
    shutil.copytree(storage, copy)
    store = ReadingStore(copy)
    try:
        return Counter((r["device_id"], r["seq"]) for r in store.readings())
    finally:
        store.close()
        shutil.rmtree(copy)


def power_cut_run(tmp: Path, shim: Path, normal_store: bool) -> dict:
    """Two gateway runs under the layer, a cut after the second, a restart; the figures of each step."""
    broker = LoggedBroker(tmp)
    storage = tmp / "var"
    storage.mkdir(mode=0o700)  # made by the installer on the box: the layer takes it as durable
    cfg = write_config(tmp, broker.port, storage=storage, patients=1)
    devices = DevicePublisher(broker.port)
    seq = iter(range(10**6))
    runs: list[list[tuple[str, int]]] = []  # the readings each run was sent
    acked = 0
    gw: GatewayRun | None = None
    t0 = time.monotonic()

    def start(under_layer: bool) -> tuple[GatewayRun, int]:
        mark = broker.mark()
        run = GatewayRun(cfg, shim_env(shim, storage) if under_layer else dict(os.environ), normal_store)
        wait_until(lambda: broker.gateway_subscribed(mark), 30, "the gateway subscribed")
        return run, mark

    def send(n: int) -> None:
        runs.append([])
        for _ in range(n):
            i = next(seq)
            devices.publish(TOPIC, bp(i, ts_at(i, step_s=1.0)))  # returns on the broker's PUBACK
            runs[-1].append(("bp-0001", i))

    try:
        # Run 1 ends cleanly: SQLite checkpoints and syncs on close, whatever `synchronous` says.
        gw, mark = start(under_layer=True)
        send(BATCH)
        wait_until(lambda: broker.gateway_acks(mark) >= BATCH, 20, "the gateway's PUBACKs")
        assert gw.stop(signal.SIGTERM) == 0
        acked += broker.gateway_acks(mark)

        # Run 2 ends with a SIGKILL right after the gateway's last PUBACK, then the power goes.
        gw, mark = start(under_layer=True)
        send(BATCH)
        wait_until(lambda: broker.gateway_acks(mark) >= BATCH, 20, "the gateway's PUBACKs", every=0.002)
        gw.stop(signal.SIGKILL)
        acked += broker.gateway_acks(mark)
        in_page_cache = stored(storage)
        cut = cut_power(storage)
        after_cut = stored(storage)

        # Run 3 on what the disk kept. The broker redelivers what was never acknowledged ahead of a
        # reading sent now (in order, one session), so once that one is stored nothing else is coming.
        gw, _ = start(under_layer=False)
        devices.publish(TOPIC, bp(SENTINEL, ts_at(2 * BATCH, step_s=1.0)))
        wait_until(
            lambda: any(k[0] == "bp-0001" and k[3] == SENTINEL for k in stored_keys(storage)),
            20,
            "the reading sent after the restart",
        )
        gw.stop(signal.SIGKILL)  # what it stored is read from a copy, recovered as on a restart
        final = stored(storage)
        del final[("bp-0001", SENTINEL)]
    finally:
        devices.close()
        if gw is not None:
            gw.stop(signal.SIGKILL)
        broker.stop()
    sent = runs[0] + runs[1]
    figures = {
        "acknowledged": acked,
        "stored_after_sigkill": sum(in_page_cache.values()),
        "stored_after_cut": sum(after_cut.values()),
        "stored_after_restart": sum(final.values()),
        "lost": sorted(set(sent) - set(final)),
        "duplicates": sorted(k for k, n in final.items() if n > 1),
        "cut": cut,
        "seconds": round(time.monotonic() - t0, 1),
    }
    shown = {**figures, "lost": len(figures["lost"]), "cut": vars(cut)}
    print(f"\nsynchronous={'NORMAL' if normal_store else 'FULL'} reading store: {json.dumps(shown)}")
    assert acked == len(sent) == 2 * BATCH, "the gateway should have acknowledged every reading before the kill"
    assert sum(in_page_cache.values()) == len(sent), "a SIGKILL alone loses nothing"
    return {**figures, "runs": runs, "after_cut_keys": set(after_cut)}


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.faults
def test_acknowledged_readings_survive_a_power_cut(tmp_path: Path, shim: Path) -> None:
    f = power_cut_run(tmp_path, shim, normal_store=False)
    first, second = f["runs"]
    assert f["after_cut_keys"] == set(first + second), "an acknowledged reading was lost in the cut"
    assert f["lost"] == [] and f["duplicates"] == []
    assert f["stored_after_restart"] == 2 * BATCH
    # What kept them is the WAL as the shim recorded it at the last fdatasync of a commit.
    assert "readings.db-wal" in f["cut"].kept


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.faults
def test_a_normal_reading_store_loses_acknowledged_readings(tmp_path: Path, shim: Path) -> None:
    """The same run with the reading store at synchronous=NORMAL: the layer bites, FULL is what saves the data."""
    f = power_cut_run(tmp_path, shim, normal_store=True)
    first, second = f["runs"]
    # NORMAL syncs the WAL only at a checkpoint: the clean close of run 1 made its readings durable,
    # every reading run 2 acknowledged was in an unsynced WAL, and the broker has forgotten it.
    assert f["after_cut_keys"] == set(first)
    assert f["lost"] == second, "acknowledged readings of the killed run should be lost with NORMAL"
    assert f["duplicates"] == []
