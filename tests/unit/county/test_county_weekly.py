"""The county's weekly figures per village and per clinic (county/weekly.py) without a cluster: villages from
the clinics' statuses, BP control rate against the home threshold (< 135/85 mmHg, at least 6 unflagged
readings, as the clinic's `bp_high`), AF found by an alert or a screening strip, and the downloadable report."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

from box.app import villages_of
from box.config import PatientConfig
from county.store import CountyStore
from county.uplinked import StatusIn, parse
from county.weekly import BP_CONTROL, by_place, meeting_figures, weekly_csv
from stream.models import CHINA_TZ

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=CHINA_TZ)
SINCE = (NOW - timedelta(days=7)).timestamp()


def status(clinic: str, villages: dict | None, seq: int) -> tuple[StatusIn, None, int]:
    body = {"clinic": clinic, "online": True, "updated_at": NOW.isoformat()}
    if villages is not None:
        body["villages"] = villages
    item = parse(f"vgp.0.{clinic}.status", json.dumps(body).encode())
    assert isinstance(item, StatusIn)
    return item, None, seq


def bp(clinic: str, patient: str, values: list[tuple[int, int]], days_ago: float = 1.0, **flags: bool) -> list:
    out = []
    for i, (s, d) in enumerate(values):
        ts = NOW - timedelta(days=days_ago, minutes=10 * i)
        body = {
            "kind": "blood_pressure",
            "ts": ts.isoformat(),
            "seq": i + (1000 if flags else 0),
            "systolic": s,
            "diastolic": d,
            "pulse": 70,
            "unit": "mmHg",
            "status": {
                "body_movement": False,
                "irregular_pulse": False,
                "cuff_loose": False,
                "improper_position": False,
                **flags,
            },
            "patient_id": patient,
            "device_id": f"bp-{patient}",
            "received_at": ts.isoformat(),
        }
        out.append((parse(f"vgp.1.{clinic}.reading.{patient}", json.dumps(body).encode()), None, 0))
    return out


def strip(clinic: str, patient: str, label: str, days_ago: float = 1.0) -> tuple:
    ts = NOW - timedelta(days=days_ago)
    body = {
        "kind": "ecg_strip",
        "ts": ts.isoformat(),
        "strip_id": f"hh-{patient}-{label}",
        "fs": 300.0,
        "seconds": 30.0,
        "label": label,
        "confidence": 0.9,
        "model": "screen-v1",
        "patient_id": patient,
        "device_id": f"hh-{patient}",
        "received_at": ts.isoformat(),
    }
    return parse(f"vgp.1.{clinic}.reading.{patient}", json.dumps(body).encode()), None, 0


def alert(clinic: str, patient: str, condition: str, days_ago: float = 1.0) -> tuple:
    at = (NOW - timedelta(days=days_ago)).isoformat()
    body = {
        "alert_id": f"{clinic}-{patient}-{condition}-{days_ago}",
        "patient_id": patient,
        "clinic": clinic,
        "tier": "township",
        "condition": condition,
        "severity": "medium",
        "state": "firing",
        "opened_at": at,
        "updated_at": at,
        "escalated_from": None,
    }
    return parse(f"vgp.2.{clinic}.alert.township", json.dumps(body).encode()), None, 0


def test_a_status_lists_patients_by_village_and_a_bad_roster_costs_nothing_else() -> None:
    item, _, _ = status("c1", {"dongcun": ["p1", "p2"], "xicun": ["p3"], "": ["p9"], "bad": "p4", "n": [5, "p5"]}, 1)
    assert sorted(item.villages) == [("p1", "dongcun"), ("p2", "dongcun"), ("p3", "xicun"), ("p5", "n")]
    assert item.online
    assert parse("vgp.0.c1.status", b'{"clinic": "c1", "online": false}').villages is None  # a last will
    assert status("c1", None, 1)[0].villages is None  # an older gateway


def test_the_gateway_lists_its_patients_by_village_from_their_labels() -> None:
    patients = [
        PatientConfig(id="p-0001", labels={"village": "dongcun", "township": "xiaozhen"}),
        PatientConfig(id="p-0002", labels={"chronic_af": True}),
        PatientConfig(id="p-0003", labels={"village": "dongcun"}),
        PatientConfig(id="p-0004", labels={"village": "xicun"}),
    ]
    assert villages_of(patients) == {"dongcun": ["p-0001", "p-0003"], "xicun": ["p-0004"]}


def test_bp_control_and_af_found_per_village_and_per_clinic(tmp_path: Path) -> None:
    store = CountyStore(tmp_path)
    store.store_batch(
        [
            status("c1", {"dongcun": ["p1", "p2", "p3"], "xicun": ["p4", "p6"]}, 10),
            status("c2", {"dongcun": ["q1"], "nancun": ["q2"]}, 11),
        ]
    )
    store.store_batch(
        [
            # p1: six good readings averaging 130/80 -> controlled; a flagged 200/120 is left out
            *bp("c1", "p1", [(128, 78), (132, 82)] * 3),
            *bp("c1", "p1", [(200, 120)], body_movement=True),
            *bp("c1", "p2", [(140, 82)] * 6),  # systolic mean high: not controlled
            *bp("c1", "p3", [(120, 70)] * 3),  # too few readings to judge
            *bp("c1", "p6", [(135, 80)] * 6),  # at the threshold is not below it
            *bp("c1", "p6", [(120, 70)] * 6, days_ago=9),  # last week's readings do not count
            *bp("c2", "q1", [(120, 86)] * 6),  # diastolic mean high
            *bp("c2", "q2", [(118, 76)] * 7),  # controlled
            *bp("c1", "p5", [(120, 70)] * 6),  # no status lists p5: village unknown
            alert("c1", "p1", "af"),  # AF by alert
            strip("c1", "p1", "af"),  # ... and by strip: one patient found
            strip("c1", "p4", "af"),  # AF by strip only
            strip("c1", "p3", "normal"),
            alert("c1", "p2", "af", days_ago=10),  # before the period
            alert("c1", "p2", "bp_high"),  # not AF
            alert("c2", "q1", "af_rvr"),  # fast AF counts as AF found
        ]
    )
    # A later status no longer lists p3 (p3 keeps its village); an older one redelivered changes nothing.
    store.store_batch([status("c1", {"dongcun": ["p1", "p2"], "xicun": ["p4", "p6"]}, 20)])
    store.store_batch([status("c1", {"xicun": ["p1"]}, 5)])

    figures = meeting_figures(store, SINCE)
    villages = {r["village"]: r for r in figures["by_village"]}
    assert [r["village"] for r in figures["by_village"]] == ["dongcun", "nancun", "xicun", None]
    assert villages["dongcun"] == {
        "village": "dongcun",
        "clinics": ["c1", "c2"],
        "patients": 4,
        "bp_patients": 3,
        "bp_controlled": 1,
        "bp_control_rate": 0.333,
        "bp_too_few_readings": 1,
        "af_found": 2,
        "af_by_alert": 2,
        "af_by_strip": 1,
    }
    assert (
        villages["xicun"]["bp_patients"],
        villages["xicun"]["bp_controlled"],
        villages["xicun"]["af_found"],
        villages["xicun"]["af_by_strip"],
    ) == (1, 0, 1, 1)
    assert villages["nancun"]["bp_control_rate"] == 1.0 and villages["nancun"]["af_found"] == 0
    assert villages[None] == {
        "village": None,
        "clinics": ["c1"],
        "patients": None,
        "bp_patients": 1,
        "bp_controlled": 1,
        "bp_control_rate": 1.0,
        "bp_too_few_readings": 0,
        "af_found": 0,
        "af_by_alert": 0,
        "af_by_strip": 0,
    }
    clinics = {r["clinic"]: r for r in figures["by_clinic"]}
    assert (
        clinics["c1"]["patients"],
        clinics["c1"]["bp_patients"],
        clinics["c1"]["bp_controlled"],
        clinics["c1"]["bp_too_few_readings"],
        clinics["c1"]["af_found"],
    ) == (5, 4, 2, 1, 2)
    assert (
        clinics["c2"]["bp_patients"],
        clinics["c2"]["bp_controlled"],
        clinics["c2"]["bp_control_rate"],
        clinics["c2"]["af_found"],
        clinics["c2"]["af_by_alert"],
    ) == (2, 1, 0.5, 1, 1)
    assert figures["bp_control"] == {"systolic_below_mmhg": 135, "diastolic_below_mmhg": 85, "min_readings": 6}
    assert figures["alerts_by_clinic_tier"]  # the existing figures are still there


def test_the_rule_is_the_clinics_bp_high_default() -> None:
    assert (BP_CONTROL.systolic_below, BP_CONTROL.diastolic_below, BP_CONTROL.min_readings) == (135, 85, 6)
    rows, _ = by_place([("c", "p", 6, 134.9, 84.9), ("c", "q", 6, 134.9, 85.0)], set(), set(), {})
    assert (rows[0]["bp_patients"], rows[0]["bp_controlled"]) == (2, 1)


def test_the_report_has_the_village_and_clinic_columns(tmp_path: Path) -> None:
    store = CountyStore(tmp_path)
    store.store_batch(
        [
            status("c1", {"dongcun": ["p1"]}, 1),
            *bp("c1", "p1", [(120, 70)] * 6),
            strip("c1", "p1", "af"),
            *bp("c1", "p9", [(150, 95)] * 6),
        ]
    )
    text = weekly_csv("xian", {"days": 7, **meeting_figures(store, SINCE)})
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:])))
    header = rows.index(next(r for r in rows if r and r[0] == "村 village"))
    assert rows[header][2:] == [
        "登记患者 patients",
        "血压评估患者 bp_patients",
        "血压控制达标 bp_controlled",
        "血压控制率 bp_control_rate_%",
        "读数不足 bp_too_few_readings",
        "发现房颤 af_found",
        "其中告警 af_by_alert",
        "其中筛查 af_by_strip",
    ]
    assert rows[header + 1] == ["dongcun", "c1", "1", "1", "1", "100.0", "0", "1", "0", "1"]
    assert rows[header + 2] == ["未标注村", "c1", "", "1", "0", "0.0", "0", "0", "0", "0"]
    clinic_header = rows.index(next(r for r in rows if r and r[0] == "诊所 clinic" and len(r) > 3))
    assert rows[clinic_header + 1] == ["c1", "1", "2", "1", "50.0", "0", "1", "0", "1"]
    assert any("135/85" in c for r in rows for c in r)
