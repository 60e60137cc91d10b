"""AF screening in the product (issue 20 item 3): a strip as one MQTT message, judged by the stream core off the
event loop, stored with its result (once per strip id), republished thin on the patient's reading topic, never
an alert; the console's screening page and referral list, the patient report and the FHIR Observation.

The strips are real CinC 2017 ones that ship with the repo (tests/data/ecg/challenge2017): A00972 is AF (60 s),
A00001 normal (30 s), A01070 noisy (21.8 s).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from box.app import Gateway
from box.config import GatewayConfig
from gateway.ingress import DeviceBinding, DeviceRegistry, decode_message
from stream.ecg.evaluation import read_record
from stream.models import CHINA_TZ, Accepted, DeviceKind, Rejected, ScreenedStrip
from stream.store import ReadingQueries, ReadingStore
from tests.support.paths import ECG_SLICES

STRIPS = ECG_SLICES / "challenge2017"
CLINIC = "c1"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=CHINA_TZ)
REGISTRY = DeviceRegistry(
    [
        DeviceBinding("hh-1", "p-0001", DeviceKind.ECG_HANDHELD),
        DeviceBinding("ecg-2", "p-0002", DeviceKind.ECG),
        DeviceBinding("bp-1", "p-0001", DeviceKind.BLOOD_PRESSURE),
    ]
)


def strip_samples(name: str) -> tuple[float, list[int]]:
    r = read_record(str(STRIPS / name))
    return r.fs, [int(v) for v in np.rint(r.signal_uv)]


def strip_payload(name: str, strip_id: str, ts: datetime = NOW, **extra: object) -> dict:
    fs, x = strip_samples(name)
    return {
        "kind": "ecg_strip",
        "strip_id": strip_id,
        "ts": ts.isoformat(),
        "fs": fs,
        "lead": "I",
        "samples_uv": x,
        **extra,
    }


def decode(device: str, body: dict | bytes) -> Accepted | Rejected:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_message(f"vg/{CLINIC}/device/{device}/reading", payload, CLINIC, REGISTRY, NOW)


# ---------------------------------------------------------------- payload


def test_a_strip_is_one_message_keyed_by_its_strip_id():
    a = decode("hh-1", strip_payload("A00001", "hh-1-0001"))
    assert isinstance(a, Accepted) and a.reading.kind == "ecg_strip" and a.patient_id == "p-0001"
    assert len(a.reading.samples_uv) == 9000 and a.reading.fs == 300 and a.reading.lead == "I"
    # a resend of the same strip (another ts, as a device that re-stamps on retry would) is the same strip
    again = decode("hh-1", strip_payload("A00001", "hh-1-0001", NOW + timedelta(seconds=5)))
    other = decode("hh-1", strip_payload("A00001", "hh-1-0002"))
    assert again.idempotency_key == a.idempotency_key != other.idempotency_key
    # a patch may send one too; the size of a 60-s strip at 300 Hz fits the ingress limit
    assert isinstance(decode("ecg-2", strip_payload("A00972", "s-60")), Accepted)


def _with(**changes: object) -> dict:
    body = {"kind": "ecg_strip", "strip_id": "s1", "ts": NOW.isoformat(), "fs": 250, "samples_uv": [10, -20] * 1250}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    "body, reason, says",
    [
        (_with(samples_uv=[0] * 2000), "invalid_reading", "8.0 s"),  # under 9 s
        (_with(samples_uv=[0] * 15_250), "invalid_reading", "61.0 s"),  # over 60 s
        (_with(fs=100), "invalid_reading", "fs"),  # below 125 Hz
        (_with(fs=1000, samples_uv=[0] * 20_000), "invalid_reading", "fs"),  # above 500 Hz
        (_with(samples_uv=[40_000] * 2500), "invalid_reading", "samples_uv"),  # beyond int16 µV
        (_with(samples_uv=[1.5] * 2500), "invalid_reading", "samples_uv"),  # not whole µV
        (_with(strip_id=None), "invalid_reading", "strip_id"),
        (_with(strip_id="a/b"), "invalid_reading", "strip_id"),  # never a topic level
        (_with(result="af"), "invalid_reading", "result"),  # a device does not say the result
        (_with(), "wrong_kind", "blood_pressure"),  # from a BP cuff
    ],
)
def test_bad_strips_are_rejected_with_a_reason(body, reason, says):
    device = "bp-1" if reason == "wrong_kind" else "hh-1"
    r = decode(device, body)
    assert isinstance(r, Rejected) and r.reason == reason and says in r.detail, r


def test_a_handheld_sends_strips_and_battery_only():
    r = decode("hh-1", {"kind": "ecg", "ts": NOW.isoformat(), "seq": 1, "fs": 250, "samples_uv": [0] * 250})
    assert isinstance(r, Rejected) and r.reason == "wrong_kind"
    assert isinstance(decode("hh-1", {"kind": "battery", "ts": NOW.isoformat(), "percent": 80}), Accepted)


# ---------------------------------------------------------------- the gateway: judge, store, ack, republish


def gateway_config(storage: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "clinic": CLINIC,
            "storage": {"path": str(storage)},
            "patients": [
                {
                    "id": "p-0001",
                    "devices": [{"id": "hh-1", "kind": "ecg_handheld"}, {"id": "bp-1", "kind": "blood_pressure"}],
                },
                {"id": "p-0002", "devices": [{"id": "ecg-2", "kind": "ecg"}]},
            ],
        }
    )


async def test_the_gateway_screens_stores_once_acks_after_the_commit_and_republishes_thin(tmp_path):
    gw = Gateway(gateway_config(tmp_path / "var"), clock=lambda: NOW + timedelta(seconds=2))
    published: list[dict] = []
    acks: list[str] = []
    committed_at_ack: list[int] = []

    async def publish_nowait(topic: str, payload: str, **kw: object) -> None:
        if topic.endswith("/reading"):
            published.append(json.loads(payload))

    for link in (gw.link, getattr(gw, "ecg_link", None)):  # the live republish, without a broker
        if link is not None:
            link.publish_nowait = publish_nowait  # type: ignore[method-assign]
    db = tmp_path / "var" / "readings.db"

    def ack(name: str):
        def done() -> None:
            acks.append(name)  # what a second connection sees then: the strip is committed before its ack
            committed_at_ack.append(sqlite3.connect(db).execute("SELECT COUNT(*) FROM strips").fetchone()[0])

        return done

    topic = f"vg/{CLINIC}/device/{{}}/reading"
    af = json.dumps(strip_payload("A00972", "hh-1-af")).encode()
    await gw.on_message(topic.format("hh-1"), af, ack("af"))
    await gw.on_message(topic.format("hh-1"), af, ack("af-again"))  # QoS 1 redelivery
    await gw.on_message(topic.format("ecg-2"), json.dumps(strip_payload("A01070", "p-noisy")).encode(), ack("noisy"))
    bad = [
        (b"{not json", "malformed_json"),
        (json.dumps(_with(fs=50)).encode(), "invalid_reading"),
        (json.dumps(_with(samples_uv=[0] * 100)).encode(), "invalid_reading"),
    ]
    for payload, _ in bad:
        await gw.on_message(topic.format("hh-1"), payload, ack("bad"))
    for _ in range(200):  # the screening runs in a thread; then the tick's commit, then the acks
        if len(acks) == 6:
            break
        await asyncio.sleep(0.05)
    for core in (gw.core, getattr(gw, "ecg_core", None)):  # (the ECG lane's own core, where there is one)
        if core is not None:
            await core.drain()

    assert sorted(acks) == sorted(["af", "af-again", "noisy", "bad", "bad", "bad"])
    assert all(n >= 1 for n, name in zip(committed_at_ack, acks) if name != "bad")
    assert gw.counters.accepted["ecg_strip"] == 2 and gw.counters.rejected["duplicate"] == 1
    assert gw.counters.rejected["malformed_json"] == 1 and gw.counters.rejected["invalid_reading"] == 2
    q = ReadingQueries(db)
    rows = {s["strip_id"]: s for s in q.strips()}
    assert set(rows) == {"hh-1-af", "p-noisy"}
    assert (
        rows["hh-1-af"]["label"] == "af"
        and rows["hh-1-af"]["confidence"] > 0.9
        and rows["hh-1-af"]["model"] == "screen-v5"
    )
    assert 90 <= rows["hh-1-af"]["hr_bpm"] <= 115 and rows["p-noisy"]["label"] == "noisy"
    # republished on the patient's reading topic: the result, not the samples (thin uplinks)
    first = next(b for b in published if b["strip_id"] == "hh-1-af")  # (patients run side by side)
    assert first["kind"] == "ecg_strip" and first["label"] == "af" and "samples_uv" not in first
    assert {
        "strip_id",
        "ts",
        "fs",
        "seconds",
        "hr_bpm",
        "confidence",
        "probabilities",
        "model",
        "patient_id",
        "device_id",
        "received_at",
    } <= set(first)
    assert len(published) == 2  # the redelivery is not republished
    # a screening, not an alarm: nothing reached the dispatcher
    assert gw.alerts.active() == [] and not any(gw.dispatcher.counters.values())
    q.close()
    gw.store.close()
    gw.alerts.close()


# ---------------------------------------------------------------- the store


def screened(name: str, label: str, strip_id: str, ts: datetime, hr: float | None = 80.0) -> ScreenedStrip:
    fs, x = strip_samples(name)
    return ScreenedStrip(
        ts=ts,
        strip_id=strip_id,
        fs=fs,
        seconds=len(x) / fs,
        lead="I",
        label=label,  # type: ignore[arg-type]
        confidence=0.93,
        hr_bpm=hr,
        beats=40,
        probabilities={label: 0.93},
        model="screen-v5",
        samples_uv=x,
    )


def acc(reading: ScreenedStrip, patient: str = "p-0001", device: str = "ecg-0001") -> Accepted:
    return Accepted(
        reading=reading,
        patient_id=patient,
        device_id=device,
        received_at=reading.ts + timedelta(seconds=3),
        idempotency_key=f"strip-{reading.strip_id}",
    )


def seed_strips(
    storage: Path, now: datetime = NOW, patient: str = "p-0001", device: str = "ecg-0001"
) -> dict[str, str]:
    """Four screened strips of `patient` today (af, other, normal, noisy) and an af one a week ago, already
    referred. Returns label -> strip key."""
    store = ReadingStore(storage)
    made = {
        "af": screened("A00972", "af", "s-af", now - timedelta(hours=2), 101),
        "other": screened("A00001", "other", "s-other", now - timedelta(hours=1), 64),
        "normal": screened("A00001", "normal", "s-normal", now - timedelta(minutes=30), 79),
        "noisy": screened("A01070", "noisy", "s-noisy", now - timedelta(minutes=10), 106),
        "old": screened("A00972", "af", "s-old", now - timedelta(days=6), 99),
    }
    for r in made.values():
        assert store.add(acc(r, patient, device))
    store.mark_referred("strip-s-old", "dr-wang", now - timedelta(days=5))
    store.close()
    return {k: f"strip-{r.strip_id}" for k, r in made.items()}


def test_the_store_keeps_a_strip_compactly_once_and_a_referral_once(tmp_path):
    keys = seed_strips(tmp_path)
    store = ReadingStore(tmp_path)
    assert store.add(acc(screened("A00972", "af", "s-af", NOW))) is False  # the same strip again
    blob = (
        sqlite3.connect(store.path)
        .execute("SELECT length(samples_uv), n_samples FROM strips WHERE strip_id='s-af'")
        .fetchone()
    )
    assert blob[1] == 18000 and blob[0] < 18000 * 2 * 0.6  # int16, compressed
    q = ReadingQueries(store.path)
    full = q.strip(keys["af"])
    assert full is not None and full["samples_uv"].tolist() == strip_samples("A00972")[1]
    assert [s["label"] for s in q.strips(labels=("af", "other"), referred=False)] == ["other", "af"]
    assert store.mark_referred(keys["af"], "dr-li", NOW, "county hospital") is True
    assert store.mark_referred(keys["af"], "dr-zhao", NOW) is False  # the first mark stays
    assert store.mark_referred("no-such-strip", "dr-li", NOW) is None
    ref = q.strip(keys["af"])
    assert ref["referred_by"] == "dr-li" and ref["referral_note"] == "county hospital"
    assert [s["label"] for s in q.strips(labels=("af", "other"), referred=False)] == ["other"]
    assert q.last_reading_at("p-0001", "ecg-0001") is not None  # a handheld is "seen" after a restart too
    with pytest.raises(TypeError):  # a strip is never stored before its screening
        store.add(decode("hh-1", strip_payload("A00001", "raw")))  # type: ignore[arg-type]
    q.close()
    store.close()


# ---------------------------------------------------------------- FHIR and the report


def test_fhir_has_one_observation_per_strip_with_its_interpretation(tmp_path):
    from console.fhir_export import build_bundle, validate

    seed_strips(tmp_path)
    bundle = build_bundle(tmp_path, CLINIC, "p-0001", NOW - timedelta(days=1), NOW, now=NOW)
    validate(bundle)
    obs = {
        o["resource"]["valueCodeableConcept"]["coding"][1]["code"]
        if "valueCodeableConcept" in o["resource"]
        else "noisy": o["resource"]
        for o in bundle["entry"]
        if o["resource"]["code"]["coding"][0]["code"] == "8601-7"
    }
    assert set(obs) == {"af", "other", "normal", "noisy"}  # the week-old one is outside the period
    af = obs["af"]
    assert af["category"][0]["coding"][0]["code"] == "procedure"
    assert af["valueCodeableConcept"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "49436004",
        "display": "Atrial fibrillation",
    }
    assert (
        af["interpretation"][0]["coding"][0]["code"] == "A"
        and obs["other"]["interpretation"][0]["coding"][0]["code"] == "A"
    )
    assert obs["normal"]["interpretation"][0]["coding"][0]["code"] == "N"
    noisy = obs["noisy"]
    assert "interpretation" not in noisy and "valueCodeableConcept" not in noisy
    assert noisy["dataAbsentReason"]["coding"][0]["code"] == "error"
    assert [c["code"]["coding"][0]["code"] for c in noisy["component"]] == ["131328"]  # no rate from noise
    comps = {c["code"]["coding"][0]["code"]: c for c in af["component"]}
    assert comps["8867-4"]["valueQuantity"]["value"] == 101
    sd = comps["131328"]["valueSampledData"]
    assert len(sd["data"].split()) == 18000 and sd["period"] == round(1000 / 300, 6)
    assert "screen-v5" in af["method"]["text"] and af["device"]["identifier"]["value"] == "ecg-0001"
    # --ecg none: the result without the signal
    lean = build_bundle(tmp_path, CLINIC, "p-0001", NOW - timedelta(days=1), NOW, ecg="none", now=NOW)
    assert not any("valueSampledData" in c for e in lean["entry"] for c in e["resource"].get("component", []))


def test_the_report_lists_the_screenings_and_draws_the_positive_ones(tmp_path):
    from console.patient_report import build_report, render_html_data

    seed_strips(tmp_path)
    d = build_report(tmp_path, CLINIC, "p-0001", timedelta(days=7), NOW)
    sc = d.stats["screening"]
    assert sc["n"] == 5 and sc["labels"] == {"normal": 1, "af": 2, "other": 1, "noisy": 1}
    assert sc["referred"] == 1 and sc["waiting"] == 2
    assert len(d.strip_samples) == 3  # af, other and the old af: drawn (first 10 s each)
    html = render_html_data(d, "zh")
    assert "房颤筛查（短时心电）" in html and "请重新采集" in html and "dr-wang" in html
    assert html.count('alt="ECG af"') == 2 and html.count('alt="ECG other"') == 1


# ---------------------------------------------------------------- the console


async def test_the_screening_page_referral_list_strip_on_paper_and_the_referred_mark(tmp_path):
    from tests.support.console import client_session, console, login

    async with console(tmp_path) as (gw, base, _), client_session() as s:
        keys = seed_strips(tmp_path / "var")
        for path in ("/screening", f"/screening/{keys['af']}"):
            async with s.get(base + path, allow_redirects=False) as r:
                assert r.status == 303  # signed in only
        for path in ("/fragments/screening", f"/screening/{keys['af']}/strip.svg"):
            async with s.get(base + path, allow_redirects=False) as r:
                assert r.status == 401
        async with s.post(f"{base}/screening/{keys['af']}/refer", json={}) as r:
            assert r.status == 401
        await login(s, base)

        async with s.get(base + "/screening") as r:
            page = await r.text()
        assert r.status == 200 and "房颤筛查（短时心电）" in page and 'id="nav-screening"' in page
        waiting, today = page.split('id="referral-list"')[1].split('id="strips-today"')
        assert keys["af"] in waiting and keys["other"] in waiting and keys["normal"] not in waiting
        assert keys["old"] not in waiting  # referred last week
        assert all(keys[k] in today for k in ("af", "other", "normal", "noisy")) and "请重新采集" in today
        assert f"/screening/{keys['af']}/strip.svg?rows=1" in waiting  # each strip drawn on paper
        assert "dr-wang" in page.split('id="referred-list"')[1]

        async with s.get(f"{base}/screening/{keys['af']}/strip.svg?rows=1") as r:
            svg = await r.text()
        assert r.headers["Content-Type"].startswith("image/svg+xml")
        assert 'width="258mm" height="40mm"' in svg and "<polyline" in svg  # 25 mm/s: 10 s = 250 mm (+ margin)
        async with s.get(f"{base}/screening/{keys['af']}") as r:
            strip_page = await r.text()
        assert (
            'class="ecg-paper"' in strip_page
            and "25 mm/s · 10 mm/mV" in strip_page
            and 'width="258mm" height="246mm"' in strip_page
        )  # 6 rows of 10 s + a title
        async with s.get(f"{base}/screening/{keys['noisy']}") as r:
            noisy = await r.text()
        assert 'id="retake"' in noisy and "106/min" not in noisy  # the rate of noise is not shown
        async with s.get(f"{base}/screening/{keys['af']}?lang=en") as r:
            assert "Atrial fibrillation" in await r.text()

        async with s.post(f"{base}/screening/{keys['af']}/refer", json={}) as r:
            assert r.status == 403  # a cookie needs the X-Vitalgate header (CSRF)
        h = {"X-Vitalgate": "1"}
        async with s.post(f"{base}/screening/{keys['af']}/refer", json={"note": "县医院心内科"}, headers=h) as r:
            body = await r.json()
        assert r.status == 200 and body["strip"]["referred_by"] == "李医生"
        assert body["strip"]["referral_note"] == "县医院心内科" and "samples_uv" not in body["strip"]
        async with s.post(f"{base}/screening/{keys['af']}/refer", json={}, headers=h) as r:
            assert r.status == 409 and "李医生" in (await r.json())["error"]
        async with s.post(f"{base}/screening/nope/refer", json={}, headers=h) as r:
            assert r.status == 404
        async with s.get(base + "/fragments/screening") as r:
            frag = await r.text()
        assert keys["af"] not in frag.split('id="referral-list"')[1].split('id="strips-today"')[0]
        assert "李医生" in frag.split('id="referred-list"')[1]

        async with s.get(base + "/patients/p-0001") as r:
            patient = await r.text()
        assert 'href="/screening?patient=p-0001"' in patient and keys["noisy"] in patient
        async with s.get(base + "/screening?patient=p-0001") as r:
            mine = await r.text()
        assert keys["old"] in mine.split('id="strips-today"')[1]  # a patient's strips: not only today's
