"""Hypothesis strategies for ingress: any JSON, well-formed readings with fields deleted, replaced or added."""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import strategies as st

from stream.models import CHINA_TZ

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)


json_any = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=20,
)


_ts = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)).map(
    lambda d: d.replace(tzinfo=CHINA_TZ).isoformat()
)


def good_reading(kind: str, seq: int, ts: str) -> dict:
    if kind == "blood_pressure":
        return {
            "kind": kind,
            "ts": ts,
            "seq": seq,
            "systolic": 128,
            "diastolic": 82,
            "pulse": 70,
            "unit": "mmHg",
            "status": {"body_movement": False, "irregular_pulse": False, "cuff_loose": False},
        }
    if kind == "glucose":
        return {"kind": kind, "ts": ts, "seq": seq, "mmol_l": 5.6, "meal": "fasting"}
    if kind == "spo2":
        return {"kind": kind, "ts": ts, "seq": seq, "spo2": 97, "pulse": 66}
    return {"kind": "ecg", "ts": ts, "seq": seq, "fs": 250, "samples_uv": [0.0] * 250, "lead_off": False}


KIND_OF = {"bp-1": "blood_pressure", "glu-1": "glucose", "spo2-1": "spo2", "ecg-1": "ecg"}


@st.composite
def mutated_reading(draw):
    """A well-formed reading with some fields deleted, replaced by any JSON, or added."""
    kind = draw(st.sampled_from(["blood_pressure", "glucose", "spo2", "ecg", "heart_rate", "battery", "nonsense"]))
    body = good_reading(kind if kind in KIND_OF.values() else "blood_pressure", draw(st.integers(0, 2**33)), draw(_ts))
    body["kind"] = kind
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["del", "set", "add", "num"]))
        keys = list(body)
        if op == "del" and keys:
            body.pop(draw(st.sampled_from(keys)))
        elif op == "set" and keys:
            body[draw(st.sampled_from(keys))] = draw(json_any)
        elif op == "num" and keys:
            body[draw(st.sampled_from(keys))] = draw(
                st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**30), 10**30))
            )
        else:
            body[draw(st.text(max_size=10))] = draw(json_any)
    return body


def dumps(body: object) -> bytes:
    # allow_nan: a device may well send NaN/Infinity literals; they must be refused, not crash.
    return json.dumps(body, allow_nan=True).encode()
