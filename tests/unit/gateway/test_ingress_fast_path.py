"""The JSON door's fast path (pydantic-core parsing the bytes) accepts exactly what the long way
(json.loads, then validation) accepts, with the same values; what it refuses goes the long way, so
rejection reasons and details cannot change (gateway/ingress.py `_decode_json`)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingress import _READING, _decode_json, _decode_json_slow
from stream.models import Rejected
from tests.support.fuzz import dumps, json_any, mutated_reading


def _same(payload: bytes) -> None:
    fast = _decode_json(payload, "bp-1", "t")
    slow = _decode_json_slow(payload, "bp-1", "t")
    if isinstance(slow, Rejected):
        assert fast == slow
    else:
        # model_dump_json: NaN compares equal to itself this way.
        assert type(fast) is type(slow) and fast.model_dump_json() == slow.model_dump_json()


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(mutated_reading(), json_any))
def test_fast_path_agrees_with_the_long_way_on_json(body):
    _same(dumps(body))


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.one_of(st.binary(max_size=120), st.text(max_size=120).map(str.encode)))
def test_fast_path_agrees_with_the_long_way_on_any_bytes(payload):
    _same(payload)


def test_what_json_loads_reads_differently_goes_the_long_way():
    good = {"kind": "blood_pressure", "ts": "2025-06-01T09:00:00+08:00", "systolic": 120, "diastolic": 80}
    for payload in [
        b"\xef\xbb\xbf" + json.dumps(good).encode(),  # a UTF-8 BOM: json.loads reads it
        json.dumps(good).encode("utf-16"),  # so does UTF-16
        json.dumps({**good, "systolic": float("nan")}).encode(),  # NaN literals
        b'{"kind": "blood_pressure", "kind": "glucose", "ts": "2025-06-01T09:00:00+08:00", "mmol_l": 5}',  # last wins
        json.dumps(good).encode() + b" trailing",
    ]:
        _same(payload)
    assert _READING.validate_json(json.dumps(good)).systolic == 120.0
