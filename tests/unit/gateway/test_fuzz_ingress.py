"""Fuzzing the ways in: every GATT decoder, the GATT door and the JSON ingress (hypothesis).

Properties:
- no crash: a decoder returns a value or raises its own GattDecodeError (with a
  message); `decode_message` never raises, it returns Accepted or Rejected;
- every rejection carries a reason (a short key) and a detail a technician can read;
- plausibility (the next stage) never raises on what decoding accepted;
- good readings interleaved with bad payloads are all accepted, stored and
  acknowledged, and every bad one is acknowledged too (nothing hangs at the broker).

CI runs a small sample (VITALGATE_FUZZ_EXAMPLES, 2,000 payloads in total by
default, a few seconds). The documented long run:

    VITALGATE_FUZZ_EXAMPLES=100000 python -m pytest -q tests/unit/gateway/test_fuzz_ingress.py -p no:cacheprovider -s

prints how many payloads each property saw.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway import gatt_codecs as gc
from gateway.ingress import DeviceBinding, DeviceRegistry, decode_gatt, decode_message
from stream import plausibility
from stream.models import CHINA_TZ, Accepted, DeviceKind, Rejected
from stream.thresholds import Plausibility
from tests.support.fuzz import KIND_OF, dumps, good_reading, json_any, mutated_reading

TOTAL = int(os.environ.get("VITALGATE_FUZZ_EXAMPLES", "2000"))
SHARE = {"decoders": 0.30, "gatt_door": 0.15, "json_structured": 0.30, "json_bytes": 0.15, "interleaved": 0.10}
SEEN: Counter[str] = Counter()

CLINIC = "c1"
NOW = datetime(2025, 6, 1, 9, 0, tzinfo=CHINA_TZ)
REGISTRY = DeviceRegistry(
    [
        DeviceBinding("bp-1", "p-1", DeviceKind.BLOOD_PRESSURE),
        DeviceBinding("glu-1", "p-1", DeviceKind.GLUCOSE),
        DeviceBinding("ecg-1", "p-2", DeviceKind.ECG),
        DeviceBinding("spo2-1", "p-2", DeviceKind.SPO2),
    ]
)
DEVICES = ["bp-1", "glu-1", "ecg-1", "spo2-1"]

DECODERS = [
    gc.decode_bp_measurement,
    gc.decode_glucose_measurement,
    gc.decode_glucose_context,
    gc.decode_heart_rate,
    gc.decode_battery_level,
    gc.decode_current_time,
    gc.decode_date_time,
    gc.decode_racp_response,
    gc.decode_polar_pmd_response,
    gc.decode_polar_pmd_ecg,
    gc.decode_vendor_ecg_frame,
]


def _settings(name: str):
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if os.environ.get("VITALGATE_FUZZ_SHRINK", "1") != "0":
        phases.append(Phase.shrink)
    return settings(
        max_examples=max(20, int(TOTAL * SHARE[name])),
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _check_rejection(r: Rejected) -> None:
    assert r.reason and r.reason.replace("_", "").isalnum(), r
    assert r.detail and len(r.detail) >= 5, r


def _check_result(result: Accepted | Rejected) -> None:
    assert isinstance(result, (Accepted, Rejected)), result
    if isinstance(result, Rejected):
        _check_rejection(result)
        return
    bad = plausibility.check(result, Plausibility(), NOW)  # the next stage must not crash either
    if bad is not None:
        _check_rejection(bad)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    t0 = time.perf_counter()
    yield
    total = sum(SEEN.values())
    print(f"\nfuzz: {total} payloads in {time.perf_counter() - t0:.1f} s: {dict(SEEN)}")


# ---------------------------------------------------------------- GATT byte decoders

# Flags bytes that switch the optional fields on, so short random tails reach the deep paths.
_flagged = st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(lambda t: bytes([t[0]]) + t[1])


@_settings("decoders")
@given(decoder=st.sampled_from(DECODERS), data=st.one_of(st.binary(max_size=80), _flagged))
def test_gatt_decoders_return_or_raise_their_own_error(decoder, data):
    SEEN["decoders"] += 1
    try:
        decoder(data)
    except gc.GattDecodeError as exc:
        assert str(exc), "a decode error must say what is wrong"


@_settings("decoders")
@given(raw16=st.integers(0, 0xFFFF), raw32=st.integers(0, 0xFFFFFFFF))
def test_ieee11073_numbers_never_crash(raw16, raw32):
    SEEN["decoders"] += 1
    # a reserved word decodes to its Special, every other word to mantissa * 10**exponent (both signed)
    for raw, m_bits, e_bits, specials, decode in (
        (raw16, 12, 4, gc._SFLOAT_SPECIALS, gc.decode_sfloat),
        (raw32, 24, 8, gc._FLOAT_SPECIALS, gc.decode_float),
    ):
        v = decode(raw)
        if raw in specials:
            assert v is specials[raw]
            continue
        m, e = raw & ((1 << m_bits) - 1), raw >> m_bits
        m -= (1 << m_bits) if m >> (m_bits - 1) else 0
        e -= (1 << e_bits) if e >> (e_bits - 1) else 0
        assert isinstance(v, float) and math.isclose(v, m * 10.0**e, rel_tol=1e-12), (raw, v, m, e)


@_settings("gatt_door")
@given(
    uuid=st.sampled_from(["2a35", "2a18", "2a37", "2a19", "5a7e0003", "2a36", "2a34", "ffff", "zz"]),
    data=st.one_of(st.binary(max_size=64), _flagged),
    device=st.sampled_from(DEVICES + ["nobody"]),
)
def test_gatt_door_accepts_or_rejects_with_a_reason(uuid, data, device):
    SEEN["gatt_door"] += 1
    r = decode_gatt(uuid, data, device, NOW)
    if isinstance(r, Rejected):
        _check_rejection(r)
    _check_result(decode_message(f"vg/{CLINIC}/device/{device}/gatt/{uuid}", data, CLINIC, REGISTRY, NOW))


# ---------------------------------------------------------------- JSON ingress


@_settings("json_structured")
@given(body=st.one_of(mutated_reading(), json_any), device=st.sampled_from(DEVICES + ["nobody", "bp-1/x"]))
def test_json_ingress_accepts_or_rejects_with_a_reason(body, device):
    SEEN["json_structured"] += 1
    _check_result(decode_message(f"vg/{CLINIC}/device/{device}/reading", dumps(body), CLINIC, REGISTRY, NOW))


@_settings("json_bytes")
@given(
    payload=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
    topic=st.one_of(st.sampled_from([f"vg/{CLINIC}/device/{d}/reading" for d in DEVICES]), st.text(max_size=60)),
)
def test_arbitrary_bytes_and_topics_never_crash(payload, topic):
    SEEN["json_bytes"] += 1
    _check_result(decode_message(topic, payload, CLINIC, REGISTRY, NOW))


def test_payload_limit_is_a_reason_not_a_crash():
    r = decode_message(f"vg/{CLINIC}/device/bp-1/reading", b"[" * (300 * 1024), CLINIC, REGISTRY, NOW)
    assert isinstance(r, Rejected) and r.reason == "too_large"
    deep = b"[" * 100_000 + b"]" * 100_000  # nesting that blows a naive recursive parser
    r = decode_message(f"vg/{CLINIC}/device/bp-1/reading", deep, CLINIC, REGISTRY, NOW)
    assert isinstance(r, Rejected)


# ---------------------------------------------------------------- good readings around bad ones, end to end


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from box.app import Gateway
    from box.config import GatewayConfig

    storage = tmp_path_factory.mktemp("fuzz-gw")
    cfg = GatewayConfig.model_validate(
        {
            "clinic": CLINIC,
            "storage": {"path": str(storage)},
            "patients": [
                {
                    "id": "p-1",
                    "devices": [{"id": "bp-1", "kind": "blood_pressure"}, {"id": "glu-1", "kind": "glucose"}],
                },
                {"id": "p-2", "devices": [{"id": "spo2-1", "kind": "spo2"}]},
            ],
        }
    )
    loop = asyncio.new_event_loop()
    gw = loop.run_until_complete(_make(Gateway, cfg))
    yield gw, loop
    loop.run_until_complete(gw.core.drain())
    gw.store.close()
    gw.alerts.close()
    loop.close()


async def _make(cls, cfg):
    return cls(cfg)


_SEQ = iter(range(10**9))
_bad_payload = st.one_of(
    st.binary(max_size=60),
    mutated_reading().map(dumps),
    json_any.map(dumps),
    st.just(b'{"kind": "blood_pressure", "ts": "2025-06-01T09:00:00+08:00", "systolic": 400, "diastolic": 80}'),
)


@_settings("interleaved")
@given(
    plan=st.lists(
        st.one_of(
            st.tuples(st.just("good"), st.sampled_from(["bp-1", "glu-1", "spo2-1"]), st.none()),
            st.tuples(st.just("bad"), st.sampled_from(["bp-1", "glu-1", "spo2-1", "nobody"]), _bad_payload),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_good_readings_around_bad_ones_are_all_accepted_and_everything_is_acknowledged(gateway, plan):
    gw, loop = gateway
    acks: Counter[int] = Counter()
    good_keys: list[tuple[str, int]] = []

    async def feed() -> None:
        for i, (what, device, bad) in enumerate(plan):
            SEEN["interleaved"] += 1
            if what == "good":
                seq = next(_SEQ)
                ts = (datetime.now(CHINA_TZ) - timedelta(minutes=10)).isoformat()
                payload = dumps(good_reading(KIND_OF[device], seq, ts))
                good_keys.append((device, seq))
            else:
                payload = bad
            await gw.on_message(f"vg/{CLINIC}/device/{device}/reading", payload, lambda i=i: acks.update([i]))
        # Let the patient workers and the end-of-tick commit run (bounded: a hang is a failure).
        loop_ = asyncio.get_running_loop()
        deadline = loop_.time() + 10
        while loop_.time() < deadline and not (len(acks) == len(plan) and gw.core.queue_depth() == 0):
            await asyncio.sleep(0.001)

    loop.run_until_complete(feed())
    lost = [
        k
        for k in good_keys
        if gw.store._db.execute(  # by key: the store grows over a long run
            "SELECT 1 FROM readings WHERE device_id=? AND json_extract(body, '$.seq')=?", k
        ).fetchone()
        is None
    ]
    assert not lost, f"a good reading next to bad ones was lost: {lost}"
    assert sorted(acks) == list(range(len(plan))) and set(acks.values()) == {1}, (
        f"every message is acknowledged exactly once: {dict(acks)} of {len(plan)}"
    )
    assert all(not math.isnan(v) for v in gw.counters.rejected.values())
