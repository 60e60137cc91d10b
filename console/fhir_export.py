"""FHIR R4 export (`vitalgate export fhir --patient P --since T`): a Bundle of Observations for the county.

Codes (LOINC, docs/spec/china-conventions.md; units UCUM):
- blood pressure: panel 85354-9 with components systolic 8480-6 and diastolic
  8462-4, `mm[Hg]`, category vital-signs; the cuff's pulse becomes its own
  heart-rate Observation (8867-4, `/min`);
- SpO2: 2708-6 and 59408-5, `%`, vital-signs (the clip's pulse: 8867-4);
- heart rate from a strap or patch (0x2A37): 8867-4;
- glucose from a home meter: capillary blood by glucometer, 14743-9
  (moles/volume, `mmol/L`), category laboratory; a meter's "HI"/"LO" is a
  value with a comparator (> 33.3, < 0.6: the typical meter range, docs/spec/clinical-rules.md §Plausibility);
- ECG: `valueSampledData` (origin 0 µV, period 1000/fs ms, factor 1, data in
  µV), coded MDC 131328 (MDC_ECG_ELEC_POTL) and LOINC 11524-6 (EKG study),
  category procedure. By default the strips that arrhythmia alerts carried
  (10 s around each event); `--ecg frames` adds every stored frame, one
  Observation per minute of signal; `--ecg none` leaves ECG out.
- AF screening of a short strip (docs/ecg-screening.md): LOINC 8601-7 (EKG impression), category
  procedure, the label as `valueCodeableConcept` (SNOMED CT 64730000 normal sinus rhythm,
  49436004 atrial fibrillation, 698247007 cardiac arrhythmia for "other", plus the label itself
  in `urn:vitalgate:ecg-screening`), `interpretation` A (abnormal) for af/other and N for normal;
  a noisy strip has no value and no interpretation but `dataAbsentReason` error ("take it
  again"). Components: the heart rate (8867-4) and, unless `--ecg none`, the strip itself as
  `valueSampledData` (MDC 131328). The model's version is the `method`; its confidence and a
  doctor's referral are notes.

The patient is referenced by identifier (system `urn:vitalgate:<clinic>:patient`),
never by name: the ids are pseudonymous and stay so. Each Observation's
fullUrl is a UUID derived from the reading's idempotency key, so exporting
the same reading twice gives the same id (the county can de-duplicate).

The bundle is validated against the `fhir.resources` models. The package's R4
models are the R4B (4.3.0) ones, `fhir.resources.R4B`: R4B changed nothing in
Observation or Bundle as used here, so what validates there is valid R4.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from console.clinic_records import ClinicRecords
from stream.models import iso, now_local

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:oid:2.16.840.1.113883.6.24"
SNOMED = "http://snomed.info/sct"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
SCREENING_LABELS = "urn:vitalgate:ecg-screening"
# label -> (SNOMED CT code, display, interpretation code, its display)
SCREENING_CODES = {
    "normal": ("64730000", "Normal sinus rhythm", "N", "Normal"),
    "af": ("49436004", "Atrial fibrillation", "A", "Abnormal"),
    "other": ("698247007", "Cardiac arrhythmia", "A", "Abnormal"),
}
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GLUCOSE_METER_RANGE = (0.6, 33.3)
ECG_CHUNK_S = 60.0
_NS = uuid.UUID("5f0c6b2e-3d6a-4a57-9a53-6a7b1f0e2c11")  # vitalgate's namespace for stable resource ids


def _category(code: str) -> list[dict]:
    display = {"vital-signs": "Vital Signs", "laboratory": "Laboratory", "procedure": "Procedure"}[code]
    return [{"coding": [{"system": OBS_CATEGORY, "code": code, "display": display}]}]


def _qty(value: float, unit: str, code: str, comparator: str | None = None) -> dict:
    q: dict[str, Any] = {"value": round(float(value), 3), "unit": unit, "system": UCUM, "code": code}
    if comparator:
        q["comparator"] = comparator
    return q


class _Builder:
    def __init__(self, clinic: str, patient_id: str) -> None:
        self.clinic = clinic
        self.subject = {
            "identifier": {"system": f"urn:vitalgate:{clinic}:patient", "value": patient_id},
            "display": patient_id,
        }
        self.entries: list[dict] = []

    def add(self, key: str, resource: dict) -> None:
        rid = str(uuid.uuid5(_NS, f"{self.clinic}|{key}"))
        resource = {"resourceType": "Observation", "id": rid, "status": "final", "subject": self.subject, **resource}
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource})

    def common(self, r: dict) -> dict:
        out = {"effectiveDateTime": r["ts"]}
        if r.get("received_at"):
            out["issued"] = r["received_at"]
        if r.get("device_id"):
            out["device"] = {
                "identifier": {"system": f"urn:vitalgate:{self.clinic}:device", "value": r["device_id"]},
                "display": r["device_id"],
            }
        return out

    def heart_rate(self, key: str, r: dict, bpm: float) -> None:
        self.add(
            key,
            {
                "category": _category("vital-signs"),
                "code": {
                    "coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                    "text": "Heart rate",
                },
                **self.common(r),
                "valueQuantity": _qty(bpm, "/min", "/min"),
            },
        )

    def blood_pressure(self, r: dict) -> None:
        res: dict[str, Any] = {
            "category": _category("vital-signs"),
            "code": {
                "coding": [
                    {"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"}
                ],
                "text": "Blood pressure",
            },
            **self.common(r),
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                    "valueQuantity": _qty(r["systolic"], "mmHg", "mm[Hg]"),
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                    "valueQuantity": _qty(r["diastolic"], "mmHg", "mm[Hg]"),
                },
            ],
        }
        flags = [k for k, v in (r.get("status") or {}).items() if v]
        if flags:
            res["note"] = [{"text": "cuff status: " + ", ".join(flags)}]
        self.add(r["_key"], res)
        if r.get("pulse") is not None:
            self.heart_rate(r["_key"] + "|pulse", r, r["pulse"])

    def glucose(self, r: dict) -> None:
        if r.get("mmol_l") is not None:
            value = _qty(r["mmol_l"], "mmol/L", "mmol/L")
        elif r.get("range") == "hi":
            value = _qty(GLUCOSE_METER_RANGE[1], "mmol/L", "mmol/L", ">")
        elif r.get("range") == "lo":
            value = _qty(GLUCOSE_METER_RANGE[0], "mmol/L", "mmol/L", "<")
        else:
            return
        res: dict[str, Any] = {
            "category": _category("laboratory"),
            "code": {
                "coding": [
                    {
                        "system": LOINC,
                        "code": "14743-9",
                        "display": "Glucose [Moles/volume] in Capillary blood by Glucometer",
                    }
                ],
                "text": "Glucose",
            },
            **self.common(r),
            "valueQuantity": value,
        }
        notes = ([f"meal: {r['meal']}"] if r.get("meal") else []) + [f"meter flag: {f}" for f in r.get("flags", [])]
        if notes:
            res["note"] = [{"text": n} for n in notes]
        self.add(r["_key"], res)

    def spo2(self, r: dict) -> None:
        self.add(
            r["_key"],
            {
                "category": _category("vital-signs"),
                "code": {
                    "coding": [
                        {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
                        {
                            "system": LOINC,
                            "code": "59408-5",
                            "display": "Oxygen saturation in Arterial blood by Pulse oximetry",
                        },
                    ],
                    "text": "SpO2",
                },
                **self.common(r),
                "valueQuantity": _qty(r["spo2"], "%", "%"),
            },
        )
        if r.get("pulse") is not None:
            self.heart_rate(r["_key"] + "|pulse", r, r["pulse"])

    def ecg(
        self, key: str, start: datetime | str, fs: float, samples: Any, device_id: str | None, note: str | None = None
    ) -> None:
        data = " ".join(str(int(v)) for v in samples)
        res: dict[str, Any] = {
            "category": _category("procedure"),
            "code": {
                "coding": [
                    {"system": MDC, "code": "131328", "display": "MDC_ECG_ELEC_POTL"},
                    {"system": LOINC, "code": "11524-6", "display": "EKG study"},
                ],
                "text": "ECG, single lead",
            },
            "effectiveDateTime": start if isinstance(start, str) else iso(start),
            "valueSampledData": {
                "origin": {"value": 0, "unit": "uV", "system": UCUM, "code": "uV"},
                "period": round(1000.0 / fs, 6),
                "factor": 1,
                "dimensions": 1,
                "data": data,
            },
        }
        if device_id:
            res["device"] = {
                "identifier": {"system": f"urn:vitalgate:{self.clinic}:device", "value": device_id},
                "display": device_id,
            }
        if note:
            res["note"] = [{"text": note}]
        self.add(key, res)

    def screening(self, s: dict, samples: Any | None) -> None:
        """One screened strip (a row of `ClinicRecords.strips`); `samples`: µV, or None to leave the signal out."""
        res: dict[str, Any] = {
            "category": _category("procedure"),
            "code": {
                "coding": [{"system": LOINC, "code": "8601-7", "display": "EKG impression"}],
                "text": "AF screening, single-lead ECG strip",
            },
            **self.common(s),
            "method": {"text": f"vitalgate {s['model']} (automated screening of a {s['seconds']:.0f}-s strip)"},
        }
        label = s["label"]
        if label in SCREENING_CODES:
            code, display, interp, interp_display = SCREENING_CODES[label]
            res["valueCodeableConcept"] = {
                "coding": [
                    {"system": SNOMED, "code": code, "display": display},
                    {"system": SCREENING_LABELS, "code": label},
                ],
                "text": display,
            }
            res["interpretation"] = [
                {"coding": [{"system": INTERPRETATION, "code": interp, "display": interp_display}]}
            ]
        else:  # noisy: no reading of the rhythm at all
            res["dataAbsentReason"] = {
                "coding": [{"system": DATA_ABSENT, "code": "error", "display": "Error"}],
                "text": "the strip is too noisy to read; take it again",
            }
        comps: list[dict[str, Any]] = []
        if s.get("hr_bpm") and label != "noisy":  # the rate of a strip nobody can read is not a measurement
            comps.append(
                {
                    "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
                    "valueQuantity": _qty(s["hr_bpm"], "/min", "/min"),
                }
            )
        if samples is not None and len(samples):
            comps.append(
                {
                    "code": {
                        "coding": [{"system": MDC, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
                        "text": f"ECG, lead {s.get('lead') or 'unknown'}",
                    },
                    "valueSampledData": {
                        "origin": {"value": 0, "unit": "uV", "system": UCUM, "code": "uV"},
                        "period": round(1000.0 / s["fs"], 6),
                        "factor": 1,
                        "dimensions": 1,
                        "data": " ".join(str(int(v)) for v in samples),
                    },
                }
            )
        if comps:
            res["component"] = comps
        notes = [f"screening label {label}, confidence {s['confidence']:.2f}"]
        if s.get("referred_at"):
            notes.append(f"referred by {s['referred_by']} at {s['referred_at']}")
        res["note"] = [{"text": n} for n in notes]
        self.add(f"strip|{s['key']}", res)


def build_bundle(
    storage: Path,
    clinic: str,
    patient_id: str,
    since: datetime,
    until: datetime | None = None,
    ecg: str = "strips",
    now: datetime | None = None,
) -> dict:
    """The Bundle (type collection) as a JSON-ready dict; not yet validated."""
    now = now or now_local()
    until = until or now
    rec = ClinicRecords(storage)
    b = _Builder(clinic, patient_id)
    try:
        for r in rec.readings(patient_id, None, since=since, until=until, with_keys=True):
            kind = r.get("kind")
            if kind == "blood_pressure":
                b.blood_pressure(r)
            elif kind == "glucose":
                b.glucose(r)
            elif kind == "spo2":
                b.spo2(r)
            elif kind == "heart_rate":
                b.heart_rate(r["_key"], r, r["bpm"])
        if ecg in ("strips", "frames"):
            for a in rec.alerts(patient_id, since=since):
                strip = a.get("evidence", {}).get("strip")
                opened = datetime.fromisoformat(a["opened_at"])
                if isinstance(strip, dict) and strip.get("samples_uv") and since <= opened <= until:
                    b.ecg(
                        f"alert|{a['alert_id']}|strip",
                        opened,
                        float(strip["fs"]),
                        strip["samples_uv"],
                        a.get("evidence", {}).get("device_id"),
                        note=f"evidence of alert {a['condition']} ({a['alert_id']}); strip around the event, "
                        f"effective time is when the alert opened",
                    )
        for st in reversed(rec.strips(patient_id, since=since, until=until)):  # oldest first, like the rest
            full = rec.strip(st["key"]) if ecg != "none" else None
            b.screening(st, full["samples_uv"] if full else None)
        if ecg == "frames":
            _frames(b, rec, patient_id, since, until)
    finally:
        rec.close()
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NS, f"{clinic}|{patient_id}|{iso(since)}|{iso(until)}")),
        "type": "collection",
        "timestamp": iso(now),
        "meta": {"tag": [{"system": "urn:vitalgate", "code": "export", "display": f"clinic {clinic}"}]},
        "entry": b.entries,
    }


def _frames(b: _Builder, rec: ClinicRecords, patient_id: str, since: datetime, until: datetime) -> None:
    """Stored ECG frames, joined into one Observation per contiguous minute per device."""
    import numpy as np

    chunk: list = []
    for device_id, ts, fs, samples in rec.ecg_frames(patient_id, since, until):
        if chunk:
            d0, t0, fs0, parts, n = chunk
            end = t0 + timedelta(seconds=n / fs0)
            contiguous = device_id == d0 and fs == fs0 and abs((ts - end).total_seconds()) < 0.5
            if contiguous and n / fs0 < ECG_CHUNK_S:
                parts.append(samples)
                chunk[4] = n + len(samples)
                continue
            b.ecg(f"ecg|{d0}|{iso(t0)}", t0, fs0, np.concatenate(parts), d0)
        chunk = [device_id, ts, fs, [samples], len(samples)]
    if chunk:
        d0, t0, fs0, parts, _ = chunk
        b.ecg(f"ecg|{d0}|{iso(t0)}", t0, fs0, np.concatenate(parts), d0)


# Required bindings the models check only as `code` strings; checked here.
OBSERVATION_STATUS = (
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
)
BUNDLE_TYPES = (
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
)


def validate(bundle: dict) -> Any:
    """Parse with the fhir.resources models (structure, types, formats) and check the required value sets
    they leave as plain strings; raises ValueError (pydantic's ValidationError is one) when non-conformant."""
    from fhir.resources.R4B.bundle import Bundle

    model = Bundle.model_validate(bundle)
    if model.type not in BUNDLE_TYPES:
        raise ValueError(f"Bundle.type {model.type!r} is not in the required value set")
    for i, e in enumerate(model.entry or []):
        res = e.resource
        if res is None or res.get_resource_type() != "Observation":
            continue
        status = getattr(res, "status", None)  # an Observation's (the entry is typed as any Resource)
        if status not in OBSERVATION_STATUS:
            raise ValueError(f"entry[{i}].resource.status {status!r} is not in the required value set")
    return model


def export_bundle(
    storage: Path, clinic: str, patient_id: str, since: datetime, until: datetime | None = None, ecg: str = "strips"
) -> dict:
    bundle = build_bundle(storage, clinic, patient_id, since, until, ecg)
    validate(bundle)
    return bundle


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (7d, 12h) or an ISO date/time (naive = clinic time)."""
    from stream.models import CHINA_TZ, parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since wants a duration such as 7d or a date such as 2026-11-01, not {text!r}") from None
    return dt.replace(tzinfo=CHINA_TZ) if dt.tzinfo is None else dt
