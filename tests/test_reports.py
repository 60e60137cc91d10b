"""The patient report (`vitalgate report`) and the numbers behind it, on a clinic storage seeded with a known week.

`seed_clinic` is also used by the console and FHIR tests: one patient (p-0001) with a cuff, a meter and an
ECG patch whose week is known exactly, and a quiet one (p-0002).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from dispatch.alert_store import AlertStore
from dispatch.dispatcher import Dispatcher
from box.config import GatewayConfig
from stream.rhythm_log import RhythmLog
from stream.models import (
    CHINA_TZ, Accepted, BatteryReading, BloodPressureReading, Condition, EcgFrame, EcgSummary, Finding, GlucoseReading,
    Spo2Reading,
)
from stream.store import ReadingStore

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=CHINA_TZ)
TOKEN = "console-token-0123456789"
# Systolic/diastolic twice a day for 7 days: 8 of 14 below 140/90.
BP_WEEK = [(150, 95), (132, 84)] * 4 + [(128, 80)] * 4 + [(146, 88), (162, 101)]
# One reading a day: an episode of two lows (lowest 3.2), a severe one (2.8), one high.
GLUCOSE_WEEK = [5.6, 3.5, 3.2, 6.0, 2.8, 12.0, 7.0]
FS = 250


def clinic_config(storage: Path, broker_port: int = 1883, http_port: int | None = 8080) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "clinic": "c1", "broker": {"host": "127.0.0.1", "port": broker_port}, "storage": {"path": str(storage)},
        "patients": [
            {"id": "p-0001", "labels": {"village": "dongcun"},
             "devices": [{"id": "bp-0001", "kind": "blood_pressure", "schedule": "12h"},
                         {"id": "glu-0001", "kind": "glucose"}, {"id": "ecg-0001", "kind": "ecg"}]},
            {"id": "p-0002", "devices": [{"id": "bp-0002", "kind": "blood_pressure"}, {"id": "spo2-0002", "kind": "spo2"}]},
        ],
        **({"http": {"bind": "127.0.0.1", "port": http_port, "token": TOKEN}} if http_port else {}),
    })


def _acc(reading, patient: str, device: str, key: str) -> Accepted:  # type: ignore[no-untyped-def]
    return Accepted(reading=reading, patient_id=patient, device_id=device, received_at=reading.ts + timedelta(seconds=2),
                    idempotency_key=key)


def ecg_wave(seconds: float, hr: float = 72.0) -> np.ndarray:
    """A crude but ECG-looking single lead in µV: narrow R waves on a flat line, small T waves."""
    t = np.arange(int(seconds * FS)) / FS
    phase = (t * hr / 60.0) % 1.0
    return 1100 * np.exp(-((phase - 0.3) / 0.012) ** 2) + 220 * np.exp(-((phase - 0.6) / 0.05) ** 2) - 60


def seed_clinic(storage: Path, now: datetime = NOW) -> dict:
    """A known week for p-0001 (and a little for p-0002), in readings.db, rhythm.db and alerts.db."""
    storage.mkdir(parents=True, exist_ok=True)
    store = ReadingStore(storage)
    start = now - timedelta(days=7)
    for i, (s, d) in enumerate(BP_WEEK):
        ts = start + timedelta(hours=8 + 12 * i)
        store.add(_acc(BloodPressureReading(ts=ts, systolic=s, diastolic=d, pulse=70 + i), "p-0001", "bp-0001", f"bp{i}"))
    for i, g in enumerate(GLUCOSE_WEEK):
        ts = start + timedelta(days=i, hours=9)
        store.add(_acc(GlucoseReading(ts=ts, mmol_l=g, meal="fasting"), "p-0001", "glu-0001", f"glu{i}"))
    store.add(_acc(GlucoseReading(ts=now - timedelta(hours=3), range="lo"), "p-0001", "glu-0001", "glu-lo"))
    store.add(_acc(BatteryReading(ts=now - timedelta(hours=1), percent=15), "p-0001", "ecg-0001", "bat1"))
    store.add(_acc(BloodPressureReading(ts=now - timedelta(hours=2), systolic=124, diastolic=78), "p-0002", "bp-0002", "bp-p2"))
    store.add(_acc(Spo2Reading(ts=now - timedelta(hours=2), spo2=96, pulse=66), "p-0002", "spo2-0002", "spo2-p2"))
    wave = ecg_wave(30)
    for k in range(30):  # the last 30 s before now, one frame a second
        ts = now - timedelta(seconds=30 - k)
        store.add(_acc(EcgFrame(ts=ts, seq=k, fs=FS, samples_uv=wave[k * FS:(k + 1) * FS].tolist()),
                       "p-0001", "ecg-0001", f"ecg{k}"))
    store.close()

    rhythm = RhythmLog(storage)
    t0 = now - timedelta(days=1)
    kinds = ["af"] * 30 + ["sinus"] * 80 + ["unknown"] * 10  # AF burden 30/110 of analysable minutes
    for m, r in enumerate(kinds):
        rhythm.add(_acc(EcgSummary(ts=t0 + timedelta(minutes=m), hr_bpm=(96 if r == "af" else 70) if r != "unknown" else None,
                                   rhythm=r, quality=0.9 if r != "unknown" else 0.2, window_s=60.0),
                        "p-0001", "ecg-0001", f"sum{m}"))
    rhythm.close()

    clock = {"now": now - timedelta(days=2)}
    alerts = AlertStore(storage)
    d = Dispatcher.from_config(clinic_config(storage), alerts, clock=lambda: clock["now"])
    strip = {"fs": FS, "start_s": 100.0, "samples_uv": np.rint(ecg_wave(10, 110)).astype(int).tolist()}

    async def story() -> dict:
        af = await d.handle(Finding(patient_id="p-0001", condition=Condition.AF, at=clock["now"],
                                    evidence={"device_id": "ecg-0001", "hr_bpm": 104.0, "strip": strip}))
        clock["now"] += timedelta(minutes=12)
        await d.acknowledge(af.alert_id, "dr-li")  # township acked after 12 min
        clock["now"] = now - timedelta(days=1)
        low = await d.handle(Finding(patient_id="p-0001", condition=Condition.HYPOGLYCEMIA, at=clock["now"],
                                     evidence={"mmol_l": 3.5}))
        clock["now"] += timedelta(minutes=40)
        await d.acknowledge(low.alert_id, "dr-li")  # village acked after 40 min
        clock["now"] = now - timedelta(minutes=5)
        crisis = await d.handle(Finding(patient_id="p-0001", condition=Condition.BP_CRISIS, at=clock["now"],
                                        evidence={"systolic": 186, "diastolic": 116}))
        return {"af": af.alert_id, "hypo": low.alert_id, "crisis": crisis.alert_id}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callers may already be inside an event loop
        ids = pool.submit(asyncio.run, story()).result()
    alerts.close()
    return ids


# ---------------------------------------------------------------- the numbers


@pytest.fixture
def clinic(tmp_path: Path) -> tuple[Path, dict]:
    storage = tmp_path / "var"
    return storage, seed_clinic(storage)


def test_report_numbers_match_the_known_week(clinic):
    from console.patient_report import build_report

    storage, ids = clinic
    d = build_report(storage, "c1", "p-0001", timedelta(days=7), NOW)
    bp = d.stats["bp"]
    assert bp["n"] == 14 and bp["controlled"] == 8 and math.isclose(bp["control_rate"], 8 / 14)
    assert bp["crisis"] == 0
    g = d.stats["glucose"]
    # 7 meter values plus one "LO": in range 5.6, 6.0, 7.0; below 3.5, 3.2, 2.8, LO; above 12.0.
    assert g["n"] == 8 and math.isclose(g["tir"], 3 / 8) and math.isclose(g["below"], 4 / 8)
    assert g["hypo"] == 3 and g["hypo_severe"] == 2  # (3.5, 3.2), (2.8), (LO)
    r = d.stats["rhythm"]
    assert r["minutes"] == 120 and math.isclose(r["af_burden"], 30 / 110)
    assert [a["alert_id"] for a in d.stats["events"]] == [ids["af"]]
    ack = d.stats["ack"]
    assert ack["township"]["acked"] == 1 and ack["township"]["median_s"] == 12 * 60
    assert ack["village"]["acked"] == 1 and ack["village"]["median_s"] == 40 * 60
    assert ack["township"]["reached"] == 2  # the AF alert and the open crisis


def test_report_cli_writes_html_and_pdf(clinic, tmp_path):
    storage, _ = clinic
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"clinic: c1\nstorage: {{path: {storage}}}\npatients:\n  - id: p-0001\n    devices:\n"
                   f"      - {{id: bp-0001, kind: blood_pressure}}\n")
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "box.cli", "report", "--patient", "p-0001", "--period", "30d",
                           "--config", str(cfg), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    html = next(out.glob("report-p-0001-*.html")).read_text(encoding="utf-8")
    pdf = next(out.glob("report-p-0001-*.pdf")).read_bytes()
    assert "健康报告" in html and "控制率" in html and "房颤负荷" in html
    assert html.count("data:image/png;base64,") >= 4  # BP, glucose, rhythm, the AF strip, ack delays
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2
    assert str(out) in proc.stdout

    bad = subprocess.run([sys.executable, "-m", "box.cli", "report", "--patient", "p-9999", "--config", str(cfg),
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "p-9999" in bad.stderr


def test_report_in_english_and_for_a_patient_without_data(clinic):
    from console.patient_report import render_html, render_pdf

    storage, _ = clinic
    html = render_html(storage, "c1", "p-0001", timedelta(days=7), NOW, lang="en")
    assert "Health report" in html and "Control rate (&lt;140/90)" in html and "57%" in html
    empty = render_html(storage, "c1", "p-0002", timedelta(hours=1), NOW, lang="en")
    assert "No data in this period." in empty
    assert render_pdf(storage, "c1", "p-0002", timedelta(hours=1), NOW, lang="zh").startswith(b"%PDF")
