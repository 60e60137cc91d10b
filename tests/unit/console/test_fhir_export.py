"""`vitalgate export fhir`: a FHIR R4 Bundle of Observations with the LOINC codes of
docs/spec/china-conventions.md, validated with the fhir.resources models, stable ids, and ECG as valueSampledData."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from console.fhir_export import build_bundle, parse_since, validate
from tests.support.clinic import NOW, seed_clinic
from tests.support.paths import REPO


@pytest.fixture
def storage(tmp_path):
    s = tmp_path / "var"
    seed_clinic(s)
    return s


def _codes(res: dict) -> set[str]:
    return {c["code"] for c in res["code"]["coding"]}


def test_bundle_has_the_domain_codes_and_validates(storage):
    bundle = build_bundle(storage, "c1", "p-0001", NOW - timedelta(days=8), NOW, now=NOW)
    model = validate(bundle)
    assert model.type == "collection" and len(model.entry) == len(bundle["entry"])
    obs = [e["resource"] for e in bundle["entry"]]
    assert all(o["resourceType"] == "Observation" and o["status"] == "final" for o in obs)
    assert all(o["subject"]["identifier"]["value"] == "p-0001" for o in obs)
    bp = [o for o in obs if "85354-9" in _codes(o)]
    assert len(bp) == 14
    first = bp[0]
    comps = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in first["component"]}
    assert comps["8480-6"] == {"value": 150.0, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    assert comps["8462-4"]["value"] == 95.0
    assert first["category"][0]["coding"][0]["code"] == "vital-signs"
    hr = [o for o in obs if "8867-4" in _codes(o)]
    assert len(hr) == 14 and hr[0]["valueQuantity"]["code"] == "/min"  # the cuffs' pulse
    glu = [o for o in obs if "14743-9" in _codes(o)]
    assert len(glu) == 8 and all(o["category"][0]["coding"][0]["code"] == "laboratory" for o in glu)
    assert glu[0]["valueQuantity"]["code"] == "mmol/L" and glu[0]["valueQuantity"]["value"] == 5.6
    lo = [o for o in glu if o["valueQuantity"].get("comparator")]
    assert lo and lo[0]["valueQuantity"] == {
        "value": 0.6,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
        "comparator": "<",
    }
    ecg = [o for o in obs if "valueSampledData" in o]
    assert len(ecg) == 1  # the AF alert's evidence strip
    sd = ecg[0]["valueSampledData"]
    assert sd["period"] == 4.0 and sd["origin"]["code"] == "uV" and len(sd["data"].split()) == 2500
    assert {"131328", "11524-6"} <= _codes(ecg[0])
    # Ids are stable across exports: the county can de-duplicate.
    again = build_bundle(storage, "c1", "p-0001", NOW - timedelta(days=8), NOW, now=NOW)
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in bundle["entry"]]


def test_spo2_codes_frames_and_nothing_from_other_patients(storage):
    b = build_bundle(storage, "c1", "p-0002", NOW - timedelta(days=1), NOW, now=NOW)
    validate(b)
    spo2 = [e["resource"] for e in b["entry"] if "2708-6" in _codes(e["resource"])]
    assert len(spo2) == 1 and {"2708-6", "59408-5"} == _codes(spo2[0]) and spo2[0]["valueQuantity"]["code"] == "%"
    assert all(e["resource"]["subject"]["identifier"]["value"] == "p-0002" for e in b["entry"])
    frames = build_bundle(storage, "c1", "p-0001", NOW - timedelta(minutes=5), NOW, ecg="frames", now=NOW)
    validate(frames)
    chunks = [e["resource"] for e in frames["entry"] if "valueSampledData" in e["resource"]]
    assert len(chunks) == 1 and len(chunks[0]["valueSampledData"]["data"].split()) == 30 * 250


def test_a_wrong_code_or_unit_shape_fails_validation(storage):
    from pydantic import ValidationError

    def broken(**change: object) -> dict:
        b = build_bundle(storage, "c1", "p-0002", NOW - timedelta(days=1), NOW, now=NOW)
        b["entry"][0]["resource"].update(change)
        return b

    with pytest.raises(ValidationError):
        validate(broken(effectiveDateTime="yesterday"))
    with pytest.raises(ValidationError):
        validate(broken(valueQuantity={"value": "high"}))
    with pytest.raises(ValueError, match="status"):
        validate(broken(status="done"))  # not in the ObservationStatus value set


def test_since_accepts_durations_and_dates():
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-11-01", NOW).isoformat() == "2026-11-01T00:00:00+08:00"
    with pytest.raises(ValueError):
        parse_since("last week", NOW)


def test_export_fhir_cli(storage, tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"clinic: c1\nstorage: {{path: {storage}}}\npatients:\n  - id: p-0001\n    devices:\n"
        f"      - {{id: bp-0001, kind: blood_pressure}}\n"
    )
    out = tmp_path / "export" / "p-0001.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "export",
            "fhir",
            "--patient",
            "p-0001",
            "--since",
            "2026-11-01",
            "--config",
            str(cfg),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    bundle = json.loads(out.read_text(encoding="utf-8"))
    validate(bundle)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 14 + 14 + 8 + 1
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "export",
            "fhir",
            "--patient",
            "p-0001",
            "--since",
            "soon",
            "--config",
            str(cfg),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--since" in bad.stderr
