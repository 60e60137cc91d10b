"""The deployment kit (issue 16 item 10): deploy/vitalgate.service passes `systemd-analyze verify` and holds
the sandbox the README promises; deploy/mosquitto.service.d/vitalgate.conf, over Debian's mosquitto.service,
passes it too and starts a broker on what `vitalgate broker-config` writes, which refuses strangers and admits
the gateway; the install guide (docs/deployment.md, linked from the README) uses the kit's paths.

What is not tested here: the unit running under a real systemd (the test machines are containers without
one), so the sandbox's effect on BLE and numpy is checked on a box, not in CI."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from box.cli import main as cli_main
from simulators.stack import free_port, wait_port
from tests.support.paths import REPO

UNIT = REPO / "deploy" / "vitalgate.service"
DROP_IN = REPO / "deploy" / "mosquitto.service.d" / "vitalgate.conf"
BOX_VITALGATE = "/usr/local/bin/vitalgate"  # the install guide links it to /opt/vitalgate/bin/vitalgate
BROKER_DIR = "/etc/mosquitto/vitalgate"  # where the install guide has broker-config write
DEBIAN_MOSQUITTO_UNIT = Path("/lib/systemd/system/mosquitto.service")


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/test.sh installs it)")
    return exe


def _directives(path: Path) -> dict[str, list[str]]:
    """key -> values in order (systemd allows a key more than once), comments and section lines left out."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _verify(unit: Path) -> str:
    """`systemd-analyze verify` on a unit file (and the drop-ins beside it); returns what it printed.
    It exits 0 on an unknown key, only printing a warning, so anything printed counts as a problem."""
    out = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        timeout=60,
    )
    return (
        f"rc={out.returncode} {out.stdout}{out.stderr}".strip()
        if out.returncode or (out.stdout + out.stderr).strip()
        else ""
    )


def _this_vitalgate() -> str:
    exe = Path(sys.executable).parent / "vitalgate"
    assert exe.exists(), "the console script is installed with the package (pip install -e .)"
    return str(exe)


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at this checkout's vitalgate (on the box it is
    # /usr/local/bin/vitalgate); nothing else changes
    text = UNIT.read_text()
    assert text.count(BOX_VITALGATE) == 1
    unit = tmp_path / "vitalgate.service"
    unit.write_text(text.replace(BOX_VITALGATE, _this_vitalgate()))
    assert _verify(unit) == ""
    # the check has teeth: a misspelt hardening key is reported, not silently ignored
    typo = tmp_path / "typo" / "vitalgate.service"
    typo.parent.mkdir()
    typo.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    assert "ProtectSytem" in _verify(typo)


def test_the_unit_runs_the_gateway_as_its_own_user_in_a_sandbox_and_restarts_it():
    d = _directives(UNIT)
    assert d["ExecStart"] == [f"{BOX_VITALGATE} run --config /etc/vitalgate/gateway.yaml"]
    assert d["User"] == ["vitalgate"] and d["Group"] == ["vitalgate"]
    assert d["StateDirectory"] == ["vitalgate"] and d["StateDirectoryMode"] == ["0700"]  # /var/lib/vitalgate
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    assert d["UMask"] == ["0077"] and d["ProtectHome"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    assert d["Restart"] == ["on-failure"] and d["RestartPreventExitStatus"] == ["2"]  # a bad config: no loop
    # READY and the watchdog from the gateway itself (tests/integration/box/test_systemd_notify.py): a hung one is restarted
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["WatchdogSec"] == ["30s"]
    assert "mosquitto.service" in d["After"][0]


def test_the_mosquitto_drop_in_verifies_over_debians_unit(tmp_path):
    if not DEBIAN_MOSQUITTO_UNIT.exists():
        pytest.skip(f"{DEBIAN_MOSQUITTO_UNIT} is missing (Debian package mosquitto; scripts/test.sh installs it)")
    shutil.copy(DEBIAN_MOSQUITTO_UNIT, tmp_path / "mosquitto.service")
    (tmp_path / "mosquitto.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "mosquitto.service.d" / "vitalgate.conf")
    assert _verify(tmp_path / "mosquitto.service") == ""
    starts = _directives(DROP_IN)["ExecStart"]
    assert starts == ["", f"/usr/sbin/mosquitto -c {BROKER_DIR}/mosquitto.conf"]  # the package's one is cleared


@pytest.mark.broker
def test_a_broker_started_as_the_drop_in_says_admits_only_the_box(tmp_path):
    from tests.support.broker import Client

    command = shlex.split(_directives(DROP_IN)["ExecStart"][-1])
    if not Path(command[0]).exists():
        pytest.skip(f"{command[0]} is missing (Debian package mosquitto; scripts/test.sh installs it)")
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"clinic: c1\nbroker: {{host: 127.0.0.1, port: {port}}}\nstorage: {{path: {tmp_path / 'var'}}}\n"
        "patients:\n  - id: p-0001\n    devices: [{id: bp-0001, kind: blood_pressure}]\n"
    )
    out = tmp_path / "etc-mosquitto-vitalgate"
    # root drops to --user before reading its files; pytest's tmp directory is private to this user
    user = "root" if os.geteuid() == 0 else "mosquitto"
    assert cli_main(["broker-config", "--config", str(cfg), "--out", str(out), "--user", user]) == 0
    creds = dict(
        line.split(":", 1)
        for line in (out / "credentials.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    command = [c.replace(BROKER_DIR, str(out)) for c in command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        stranger = Client(port, None, None)
        gateway = Client(port, "gateway", creds["gateway"])
        try:
            assert stranger.rc not in (None, 0) and gateway.rc == 0
        finally:
            stranger.close()
            gateway.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_install_guide_uses_the_kits_paths():
    section = (REPO / "docs" / "deployment.md").read_text()
    assert "docs/deployment.md" in (REPO / "README.md").read_text()  # the front door points there
    for needed in (
        "deploy/vitalgate.service",
        "deploy/mosquitto.service.d/vitalgate.conf",
        f"vitalgate broker-config --config /etc/vitalgate/gateway.yaml --out {BROKER_DIR}",
        "vitalgate passwd",
        "/var/lib/vitalgate",
        "deploy/journald.conf.d/vitalgate.conf",
        "tls_cert",
        "vitalgate check-config",
        f"ln -s /opt/vitalgate/bin/vitalgate {BOX_VITALGATE}",
        "adduser --system",
    ):
        assert needed in section, needed


def test_the_journal_is_capped_for_a_small_disk():
    """Logs rotate within a bound that leaves room for the readings (issue 16 item 10: log rotation)."""
    conf = _directives(REPO / "deploy" / "journald.conf.d" / "vitalgate.conf")
    assert conf["SystemMaxUse"] == ["200M"] and conf["SystemKeepFree"] == ["1G"]
    assert conf["Storage"] == ["persistent"]
