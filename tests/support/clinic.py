"""A clinic's storage seeded with a known week: p-0001 with a cuff, a meter and an ECG patch, and a quiet
p-0002 (the report, console, FHIR and browser tests read it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from box.config import GatewayConfig
from dispatch.alert_store import AlertStore
from dispatch.dispatcher import Dispatcher
from stream.models import (
    CHINA_TZ,
    Accepted,
    BatteryReading,
    BloodPressureReading,
    Condition,
    EcgFrame,
    EcgSummary,
    Finding,
    GlucoseReading,
    Spo2Reading,
)
from stream.rhythm_log import RhythmLog
from stream.store import ReadingStore

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=CHINA_TZ)


TOKEN = "console-token-0123456789"


# Systolic/diastolic twice a day for 7 days: 8 of 14 below 140/90.
BP_WEEK = [(150, 95), (132, 84)] * 4 + [(128, 80)] * 4 + [(146, 88), (162, 101)]


# One reading a day: an episode of two lows (lowest 3.2), a severe one (2.8), one high.
GLUCOSE_WEEK = [5.6, 3.5, 3.2, 6.0, 2.8, 12.0, 7.0]


FS = 250


def clinic_config(storage: Path, broker_port: int = 1883, http_port: int | None = 8080) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "clinic": "c1",
            "broker": {"host": "127.0.0.1", "port": broker_port},
            "storage": {"path": str(storage)},
            "patients": [
                {
                    "id": "p-0001",
                    "labels": {"village": "dongcun"},
                    "devices": [
                        {"id": "bp-0001", "kind": "blood_pressure", "schedule": "12h"},
                        {"id": "glu-0001", "kind": "glucose"},
                        {"id": "ecg-0001", "kind": "ecg"},
                    ],
                },
                {
                    "id": "p-0002",
                    "devices": [{"id": "bp-0002", "kind": "blood_pressure"}, {"id": "spo2-0002", "kind": "spo2"}],
                },
            ],
            **({"http": {"bind": "127.0.0.1", "port": http_port, "token": TOKEN}} if http_port else {}),
        }
    )


def _acc(reading, patient: str, device: str, key: str) -> Accepted:
    return Accepted(
        reading=reading,
        patient_id=patient,
        device_id=device,
        received_at=reading.ts + timedelta(seconds=2),
        idempotency_key=key,
    )


def ecg_wave(seconds: float, hr: float = 72.0) -> np.ndarray:
    """A crude but ECG-looking single lead in µV: narrow R waves on a flat line, small T waves."""
    t = np.arange(int(seconds * FS)) / FS
    phase = (t * hr / 60.0) % 1.0
    return 1100 * np.exp(-(((phase - 0.3) / 0.012) ** 2)) + 220 * np.exp(-(((phase - 0.6) / 0.05) ** 2)) - 60


def seed_clinic(storage: Path, now: datetime = NOW) -> dict:
    """A known week for p-0001 (and a little for p-0002), in readings.db, rhythm.db and alerts.db."""
    storage.mkdir(parents=True, exist_ok=True)
    store = ReadingStore(storage)
    start = now - timedelta(days=7)
    for i, (s, d) in enumerate(BP_WEEK):
        ts = start + timedelta(hours=8 + 12 * i)
        store.add(
            _acc(BloodPressureReading(ts=ts, systolic=s, diastolic=d, pulse=70 + i), "p-0001", "bp-0001", f"bp{i}")
        )
    for i, g in enumerate(GLUCOSE_WEEK):
        ts = start + timedelta(days=i, hours=9)
        store.add(_acc(GlucoseReading(ts=ts, mmol_l=g, meal="fasting"), "p-0001", "glu-0001", f"glu{i}"))
    store.add(_acc(GlucoseReading(ts=now - timedelta(hours=3), range="lo"), "p-0001", "glu-0001", "glu-lo"))
    store.add(_acc(BatteryReading(ts=now - timedelta(hours=1), percent=15), "p-0001", "ecg-0001", "bat1"))
    store.add(
        _acc(
            BloodPressureReading(ts=now - timedelta(hours=2), systolic=124, diastolic=78), "p-0002", "bp-0002", "bp-p2"
        )
    )
    store.add(_acc(Spo2Reading(ts=now - timedelta(hours=2), spo2=96, pulse=66), "p-0002", "spo2-0002", "spo2-p2"))
    wave = ecg_wave(30)
    for k in range(30):  # the last 30 s before now, one frame a second
        ts = now - timedelta(seconds=30 - k)
        store.add(
            _acc(
                EcgFrame(ts=ts, seq=k, fs=FS, samples_uv=wave[k * FS : (k + 1) * FS].tolist()),
                "p-0001",
                "ecg-0001",
                f"ecg{k}",
            )
        )
    store.close()

    rhythm = RhythmLog(storage)
    t0 = now - timedelta(days=1)
    kinds = ["af"] * 30 + ["sinus"] * 80 + ["unknown"] * 10  # AF burden 30/110 of analysable minutes
    for m, r in enumerate(kinds):
        rhythm.add(
            _acc(
                EcgSummary(
                    ts=t0 + timedelta(minutes=m),
                    hr_bpm=(96 if r == "af" else 70) if r != "unknown" else None,
                    rhythm=r,
                    quality=0.9 if r != "unknown" else 0.2,
                    window_s=60.0,
                ),
                "p-0001",
                "ecg-0001",
                f"sum{m}",
            )
        )
    rhythm.close()

    clock = {"now": now - timedelta(days=2)}
    alerts = AlertStore(storage)
    d = Dispatcher.from_config(clinic_config(storage), alerts, clock=lambda: clock["now"])
    strip = {"fs": FS, "start_s": 100.0, "samples_uv": np.rint(ecg_wave(10, 110)).astype(int).tolist()}

    async def story() -> dict:
        af = await d.handle(
            Finding(
                patient_id="p-0001",
                condition=Condition.AF,
                at=clock["now"],
                evidence={"device_id": "ecg-0001", "hr_bpm": 104.0, "strip": strip},
            )
        )
        clock["now"] += timedelta(minutes=12)
        await d.acknowledge(af.alert_id, "dr-li")  # township acked after 12 min
        clock["now"] = now - timedelta(days=1)
        low = await d.handle(
            Finding(patient_id="p-0001", condition=Condition.HYPOGLYCEMIA, at=clock["now"], evidence={"mmol_l": 3.5})
        )
        clock["now"] += timedelta(minutes=40)
        await d.acknowledge(low.alert_id, "dr-li")  # village acked after 40 min
        clock["now"] = now - timedelta(minutes=5)
        crisis = await d.handle(
            Finding(
                patient_id="p-0001",
                condition=Condition.BP_CRISIS,
                at=clock["now"],
                evidence={"systolic": 186, "diastolic": 116},
            )
        )
        return {"af": af.alert_id, "hypo": low.alert_id, "crisis": crisis.alert_id}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callers may already be inside an event loop
        ids = pool.submit(asyncio.run, story()).result()
    alerts.close()
    return ids
