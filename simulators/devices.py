"""Simulated home devices: BP cuffs, glucose meters, SpO2 clips, ECG patches and handheld ECGs.

Each device turns a measurement into what the real thing would publish per the
contract: JSON on `vg/{clinic}/device/{id}/reading`, or the raw GATT value on
`vg/{clinic}/device/{id}/gatt/{uuid16}` as a BLE proxy would forward it.
Device time is passed in (simulated clocks may run faster than the wall).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from gateway.gatt_codecs import VENDOR_ECG_DATA_UUID, VENDOR_ECG_MAX_SAMPLES, encode_vendor_ecg_frame
from simulators.ecg_synthesis import EcgSynth
from simulators.gatt_encoding import encode_bp_measurement, encode_glucose_measurement, encode_heart_rate
from stream.models import iso

Message = tuple[str, bytes]


def reading_topic(clinic: str, device_id: str) -> str:
    return f"vg/{clinic}/device/{device_id}/reading"


def gatt_topic(clinic: str, device_id: str, uuid16: str) -> str:
    return f"vg/{clinic}/device/{device_id}/gatt/{uuid16}"


@dataclass
class BpCuff:
    clinic: str
    device_id: str
    gatt: bool = False
    seq: int = 0

    def measure(
        self,
        when: datetime,
        systolic: float,
        diastolic: float,
        pulse: float = 75,
        body_movement: bool = False,
        cuff_loose: bool = False,
    ) -> Message:
        self.seq += 1
        if self.gatt:
            raw = encode_bp_measurement(
                systolic,
                diastolic,
                pulse=pulse,
                when=when.replace(tzinfo=None),
                body_movement=body_movement,
                cuff_loose=cuff_loose,
            )
            return gatt_topic(self.clinic, self.device_id, "2a35"), raw
        body = {
            "kind": "blood_pressure",
            "ts": iso(when),
            "seq": self.seq,
            "systolic": systolic,
            "diastolic": diastolic,
            "pulse": pulse,
            "unit": "mmHg",
            "status": {"body_movement": body_movement, "irregular_pulse": False, "cuff_loose": cuff_loose},
        }
        return reading_topic(self.clinic, self.device_id), json.dumps(body).encode()


@dataclass
class GlucoseMeter:
    clinic: str
    device_id: str
    gatt: bool = False
    seq: int = 0

    def measure(
        self, when: datetime, mmol_l: float | None, meal: str | None = None, hi: bool = False, lo: bool = False
    ) -> Message:
        self.seq += 1
        if self.gatt:
            raw = encode_glucose_measurement(self.seq, when.replace(tzinfo=None), mmol_l, hi=hi, lo=lo)
            return gatt_topic(self.clinic, self.device_id, "2a18"), raw
        body: dict = {"kind": "glucose", "ts": iso(when), "seq": self.seq, "mmol_l": mmol_l}
        if meal:
            body["meal"] = meal
        if hi or lo:
            body["range"] = "hi" if hi else "lo"
        return reading_topic(self.clinic, self.device_id), json.dumps(body).encode()


@dataclass
class Spo2Clip:
    clinic: str
    device_id: str
    seq: int = 0

    def measure(self, when: datetime, spo2: float, pulse: float = 75) -> Message:
        self.seq += 1
        body = {"kind": "spo2", "ts": iso(when), "seq": self.seq, "spo2": spo2, "pulse": pulse}
        return reading_topic(self.clinic, self.device_id), json.dumps(body).encode()


def vendor_ecg_payload(seq: int, fs: int, samples_uv: list[int], lead_off: bool) -> bytes:
    """A whole-µV frame as a vendor ECG frame (docs/vendor_ecg.md) at 1.00 µV/LSB, so it carries exactly
    the JSON frame's samples; `seq` is the wire's uint16."""
    counts = np.clip(samples_uv, -32767, 32767)  # never at int16 full scale: that would read as clipped
    return encode_vendor_ecg_frame(seq & 0xFFFF, fs, 1.0, lead_off, counts)


VENDOR_ECG_SLOT = VENDOR_ECG_DATA_UUID[:8]  # the topic level: vg/{clinic}/device/{id}/gatt/5a7e0003


@dataclass
class EcgPatch:
    """`gatt=True`: binary vendor frames on `.../gatt/5a7e0003` (no time on the wire) instead of JSON."""

    clinic: str
    device_id: str
    fs: int = 250
    seed: int = 0
    seq: int = 0
    lead_off: bool = False
    gatt: bool = False
    synth: EcgSynth = field(init=False)

    def __post_init__(self) -> None:
        if self.gatt and self.fs > VENDOR_ECG_MAX_SAMPLES:
            raise ValueError(
                f"{self.device_id}: a 1-s frame at {self.fs} Hz does not fit one vendor ECG frame "
                f"(at most {VENDOR_ECG_MAX_SAMPLES} samples); use JSON or fs <= {VENDOR_ECG_MAX_SAMPLES}"
            )
        self.synth = EcgSynth(self.fs, seed=self.seed)

    def frame(self, when: datetime) -> Message:
        """One 1-s frame starting at device time `when`."""
        self.seq += 1
        x = self.synth.frame(1.0)
        if self.lead_off:
            x = np.random.default_rng(self.seq).normal(0, 5, x.size).round()
        samples = [int(v) for v in x]
        if self.gatt:
            return (
                gatt_topic(self.clinic, self.device_id, VENDOR_ECG_SLOT),
                vendor_ecg_payload(self.seq, self.fs, samples, self.lead_off),
            )
        body = {
            "kind": "ecg",
            "ts": iso(when),
            "seq": self.seq,
            "fs": self.fs,
            "samples_uv": samples,
            "lead_off": self.lead_off,
        }
        return reading_topic(self.clinic, self.device_id), json.dumps(body).encode()

    def heart_rate(self, bpm: int) -> Message:
        return gatt_topic(self.clinic, self.device_id, "2a37"), encode_heart_rate(bpm, contact=not self.lead_off)


@dataclass
class EcgHandheld:
    """A handheld lead-I ECG for AF screening: each strip one `ecg_strip` message (docs/ecg-screening.md)."""

    clinic: str
    device_id: str
    fs: int = 300
    seed: int = 0
    n: int = 0

    def strip(
        self,
        when: datetime,
        rhythm: str = "sinus",
        hr: float = 72.0,
        seconds: float = 30.0,
        artefact: str | None = None,
    ) -> Message:
        """A strip of `seconds` starting at device time `when` (a fresh synthetic recording each time)."""
        self.n += 1
        synth = EcgSynth(self.fs, seed=self.seed * 1000 + self.n, hr_bpm=hr)
        synth.set_rhythm(rhythm, hr)
        synth.set_artefact(artefact)
        x = np.clip(np.rint(synth.frame(seconds)), -32768, 32767)
        body = {
            "kind": "ecg_strip",
            "strip_id": f"{self.device_id}-{self.n:04d}",
            "ts": iso(when),
            "fs": self.fs,
            "lead": "I",
            "samples_uv": [int(v) for v in x],
        }
        return reading_topic(self.clinic, self.device_id), json.dumps(body).encode()
