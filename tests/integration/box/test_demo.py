"""The two demos the README starts, run as a user runs them (`vitalgate demo`, `vitalgate demo --county`).

Nothing else runs the demo; a change that kept every other test green once left it unable to start
(its embedded broker has no MQTT 5), so these run it end to end and read what it prints.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.county import nats_server_exe
from tests.support.paths import REPO


def demo(*args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "box.cli", "demo", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_the_demo_raises_escalates_and_acknowledges_alerts() -> None:
    out = demo("--duration", "20", "--patients", "4")
    assert "doctor's console" in out
    assert re.search(r"hypoglycemia_severe\s+firing", out), out
    assert re.search(r"村医 village\s+\S+\s+hypoglycemia\s+acknowledged", out), out  # the village doctor's ack
    accepted = int(re.search(r"readings accepted: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert accepted > 50
    assert "readings rejected: 2" in out  # the misbehaving device: rejected, counted, nothing else lost


@pytest.mark.county
def test_the_county_demo_shows_two_clinics_and_acks_going_down() -> None:
    nats_server_exe()  # fails in CI, skips elsewhere, when nats-server is missing
    out = demo("--county", "--duration", "45", "--patients", "4")
    assert "county page" in out and out.count("doctor's console") == 2
    for clinic in ("dongcun", "xicun"):
        assert f"clinic {clinic}: online" in out, out
    # Every alert the county acknowledged shows as acknowledged at its clinic too.
    acked = re.findall(r"county page\s+(\S+)\s+(\S+)\s+acknowledged from the county", out)
    assert acked, out
    for who, condition in acked:
        assert re.search(rf"{re.escape(who)}\s+{condition}\s+acknowledged$", out, re.M), f"{who} {condition}: {out}"
    assert re.search(r"alerts at the county: dongcun \d+, xicun \d+", out), out
