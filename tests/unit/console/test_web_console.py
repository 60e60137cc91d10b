"""The village doctor's console over real HTTP (uvicorn in the test's loop, as inside the gateway), without a
browser: login with people's accounts (and the shared token of a config without them) and what is closed
without it, the pages' content in both languages, acknowledge and snooze with the account in the audit
trail, the live event stream, the ECG strip, reports, FHIR, /metrics and /healthz. Roles, logout and
`vitalgate passwd` are in test_console_accounts.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta

import aiohttp
import pytest

from box.app import Gateway
from dispatch.http_api import ApiServer
from simulators.stack import free_port
from stream.models import Condition, Finding
from tests.support.clinic import NOW, TOKEN, clinic_config, seed_clinic
from tests.support.console import PEOPLE, client_session, console, login
from tests.support.paths import REPO


async def test_nothing_is_readable_without_signing_in(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        for path in ("/", "/patients", "/patients/p-0001", "/devices", f"/alerts/{ids['af']}"):
            async with s.get(base + path, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login?next=")
        for path in (
            "/events",
            "/fragments/alerts",
            "/patients/p-0001/ecg.svg",
            "/metrics",
            "/patients/p-0001/fhir.json",
            "/patients/p-0001/report.pdf",
        ):
            async with s.get(base + path, allow_redirects=False) as r:
                assert r.status == 401, path
        async with s.post(f"{base}/alerts/{ids['crisis']}/ack", json={}) as r:
            assert r.status == 401
        async with s.post(f"{base}/login", data={"password": "guess-guess-guess", "name": "李医生"}) as r:
            assert r.status == 401 and "账号或密码错误" in await r.text()
        async with s.post(f"{base}/login", data={"password": TOKEN, "name": "李医生"}) as r:
            assert r.status == 401  # with accounts, the shared token is no console password
        # A forged cookie is refused; the open endpoints stay open.
        s.cookie_jar.update_cookies({"vg_session": "eyJuIjoieCIsImV4cCI6OTk5OTk5OTk5OX0.forged"})
        async with s.get(base + "/", allow_redirects=False) as r:
            assert r.status == 303
        async with s.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with s.get(base + "/static/console.js") as r:
            assert r.status == 200
        # Open redirects are refused after login.
        async with s.post(
            f"{base}/login",
            data={"password": PEOPLE["李医生"][1], "name": "李医生", "next": "//evil.example/x"},
            allow_redirects=False,
        ) as r:
            assert r.headers["Location"] == "/"


async def test_pages_show_alerts_patients_devices_in_chinese_and_english(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        await login(s, base)
        async with s.get(base + "/") as r:
            page = await r.text()
            assert r.status == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert "当前告警" in page and "高血压危象" in page and "186/116 mmHg" in page
        assert f'data-ack="{ids["crisis"]}"' in page  # the firing one can be acknowledged...
        assert f'data-ack="{ids["af"]}"' not in page  # ...the acknowledged AF cannot
        assert '<script src="/static/console.js"' in page and "http" not in page.split("<main>")[0].replace(
            'content="width', ""
        )  # no CDN
        async with s.get(base + "/?lang=en") as r:
            assert "Hypertensive crisis" in await r.text()
        async with s.get(base + "/patients") as r:  # the language is remembered
            page = await r.text()
        assert "Patients" in page and "162/101" in page and "LO" in page and "<svg" in page
        async with s.get(base + "/devices?lang=zh") as r:
            page = await r.text()
        assert "心电贴" in page and "15%" in page and "spo2-0002" in page
        async with s.get(base + "/patients/p-0001") as r:
            page = await r.text()
        assert 'id="ecg-live"' in page and page.count('<svg class="chart"') == 3  # BP, glucose, heart rate
        assert "/patients/p-0001/report?period=7d" in page and "fhir.json" in page
        async with s.get(base + "/patients/p-0001/ecg.svg?seconds=10") as r:
            svg = await r.text()
        assert svg.startswith('<svg class="ecg"') and "<polyline" in svg and "ecg-0001" in svg
        async with s.get(base + f"/alerts/{ids['af']}") as r:
            page = await r.text()
        assert 'id="evidence-strip"' in page and "acknowledged" in page and "dr-li" in page
        async with s.get(base + "/patients/p-9999") as r:
            assert r.status == 404


async def test_acknowledge_and_snooze_from_the_page_with_the_doctor_in_the_audit_trail(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        assert await login(s, base, name="王医生") == "/"
        crisis = ids["crisis"]
        async with s.post(f"{base}/alerts/{crisis}/ack", json={}) as r:
            assert r.status == 403  # no X-Vitalgate header: could be a cross-site form
        h = {"X-Vitalgate": "1"}
        async with s.post(f"{base}/alerts/{crisis}/snooze", json={"duration": "30m"}, headers=h) as r:
            body = await r.json()
            assert r.status == 200 and body["alert"]["suppressed"] == "snooze"
        async with s.get(base + "/fragments/alerts") as r:
            assert "已暂缓" in await r.text()
        async with s.post(f"{base}/alerts/{crisis}/ack", json={"by": "someone-else"}, headers=h) as r:
            body = await r.json()
            assert r.status == 200 and body["alert"]["state"] == "acknowledged"
            assert body["alert"]["acknowledged_by"] == "王医生"  # the account signed in, never a typed name
        async with s.post(f"{base}/alerts/{crisis}/ack", json={}, headers=h) as r:
            assert r.status == 409
        trail = [(t["what"], t["detail"].get("by")) for t in gw.alerts.transitions(crisis)]
        assert ("snoozed", "王医生") in trail and ("acknowledged", "王医生") in trail
    # Scripts may use the bearer token instead of a session (no CSRF header needed).
    async with console(tmp_path / "2") as (gw, base, ids), aiohttp.ClientSession() as s:
        async with s.post(
            f"{base}/alerts/{ids['crisis']}/ack", json={"by": "script"}, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            assert r.status == 200 and (await r.json())["alert"]["acknowledged_by"] == "script"


async def test_live_events_carry_every_transition_and_end_when_the_gateway_stops(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        await login(s, base)
        async with s.get(base + "/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
            assert b"event: hello" in first
            await gw.dispatcher.handle(
                Finding(patient_id="p-0002", condition=Condition.SPO2_LOW, at=NOW, evidence={"spo2": 88})
            )
            msg = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
            assert b"event: alert" in msg
            data = json.loads(msg.decode().split("data: ", 1)[1])
            assert data["what"] == "raised" and data["condition"] == "spo2_low" and data["patient_id"] == "p-0002"
            gw.stop_event.set()
            rest = await asyncio.wait_for(r.content.read(), 5)  # the stream ends: shutdown is not held up
            assert b"event: alert" not in rest


async def test_reports_fhir_metrics_and_health_from_the_page(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        await login(s, base)
        async with s.get(base + "/patients/p-0001/report?period=7d") as r:
            html = await r.text()
            assert r.status == 200 and "健康报告" in html and "data:image/png;base64," in html
        async with s.get(base + "/patients/p-0001/report.pdf?period=7d&lang=en") as r:
            assert r.status == 200 and (await r.read()).startswith(b"%PDF")
        async with s.get(base + "/patients/p-0001/report?period=forever") as r:
            assert r.status == 400
        async with s.get(base + "/patients/p-0001/fhir.json?since=30d") as r:
            bundle = await r.json(content_type=None)
            assert r.headers["Content-Type"].startswith("application/fhir+json")
        assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) > 20
    async with console(tmp_path / "2") as (gw, base, ids), aiohttp.ClientSession() as s:
        async with s.get(base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            text = await r.text()
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        lines = set(text.splitlines())
        got = _samples(text)
        assert got[("vitalgate_alerts", (("state", "firing"), ("tier", "township")))] == 1
        assert got[("vitalgate_alerts", (("state", "firing"), ("tier", "village")))] == 0
        assert got[("vitalgate_device_connected", (("device", "ecg-0001"), ("kind", "ecg"), ("link", "mqtt")))] == 1
        assert got[("vitalgate_mqtt_connected", ())] == 0 and got[("vitalgate_queue_depth", ())] == 0
        # the ECG analysis behind the ack: how far behind (the console's gateway analyses in-process)
        assert got[("vitalgate_ecg_analysis_lagging", ())] == 0
        assert "# TYPE vitalgate_ecg_analysis_lag_seconds gauge" in lines
        assert ("vitalgate_ecg_analysis_backlog_frames", ()) in got
        assert (
            got[("vitalgate_outbox_pending", (("outbox", "alerts_mqtt"),))] == 5
        )  # 3 raised + 2 acked, no broker here
        assert "# TYPE vitalgate_readings_total counter" in lines
        assert got[("process_resident_memory_bytes", ())] > 10e6  # the library's process metrics
        assert '"p-0001"' not in text and "patient_id" not in text  # no patient ids in metrics
        gw.stop_event.set()
        async with s.get(base + "/healthz") as r:
            assert r.status == 503 and (await r.json())["stopping"] is True


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, read back with the Prometheus text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
    }


def test_metrics_counters_past_a_million_are_exact():
    """`f"{v:g}"` printed 1,234,567 as 1.23457e+06: a counter moved in steps of ten past a million."""
    from types import SimpleNamespace

    from console.web.metrics import render_metrics

    counters = SimpleNamespace(accepted={"ecg": 1_234_567}, rejected={"malformed_json": 10_000_019})
    live = SimpleNamespace(
        counters=counters,
        queue_depth=lambda: 0,
        mqtt_connected=lambda: True,
        forwarding_status=lambda: {"storage": {}},
        ecg_analysis_status=lambda: {},
    )
    src = SimpleNamespace(
        live=live,
        alerts=SimpleNamespace(pending=list, active=list),
        desk=SimpleNamespace(counters={"raised": 2_000_001}),
    )
    got = _samples(render_metrics(src, [], 0))  # type: ignore[arg-type]
    assert got[("vitalgate_readings_total", (("kind", "ecg"), ("result", "accepted")))] == 1_234_567
    assert got[("vitalgate_readings_rejected_total", (("reason", "malformed_json"),))] == 10_000_019
    assert got[("vitalgate_alert_events_total", (("event", "raised"),))] == 2_000_001


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_string_the_pages_use_exists_in_both_languages(lang):
    from console import i18n

    zh, en = i18n._TABLES["zh"], i18n._TABLES["en"]
    assert set(zh) == set(en)
    for c in Condition:
        assert f"cond.{c.value}" in i18n._TABLES[lang]


def test_templates_and_static_files_are_in_the_wheel():
    import fnmatch
    import tomllib

    repo = REPO
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["console"]
    web = repo / "console" / "web"
    files = [p.relative_to(repo / "console").as_posix() for d in ("templates", "static") for p in (web / d).iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)


async def test_the_gateway_keeps_every_ecg_summary_for_the_rhythm_column_and_reports(tmp_path):
    from console.clinic_records import ClinicRecords
    from stream.models import Accepted, EcgSummary

    gw = Gateway(clinic_config(tmp_path / "var", http_port=None), clock=lambda: NOW)  # no page: still kept
    summary = Accepted(
        reading=EcgSummary(ts=NOW, hr_bpm=118.0, rhythm="af", quality=0.93),
        patient_id="p-0001",
        device_id="ecg-0001",
        received_at=NOW,
        source="internal",
        idempotency_key="summary-1",
    )
    sent = []

    async def publish_nowait(topic, payload, qos=0, retain=False, on_error=None):
        sent.append(topic)

    gw.link.publish_nowait = publish_nowait  # type: ignore[method-assign]  # no broker here
    await gw._publish_reading(summary)  # what the stream core calls once a minute per patch
    assert sent == ["vg/c1/patient/p-0001/reading"]
    rec = ClinicRecords(tmp_path / "var")
    assert rec.latest_rhythm("p-0001") == {
        "ts": "2026-11-20T09:00:00.000+08:00",
        "hr_bpm": 118.0,
        "rhythm": "af",
        "quality": 0.93,
    }
    rec.close()
    gw.rhythm_log.close()
    gw.store.close()
    gw.alerts.close()


async def test_oversize_and_hostile_bodies_get_a_4xx_not_a_500(tmp_path):
    """Issue 16: unauthenticated /login read bodies of any size; a 100k-deep JSON gave a 500."""
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        async with s.post(
            f"{base}/login",
            data=b"password=" + b"x" * (10 * 1024 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as r:
            assert r.status == 413

        # without a Content-Length (chunked), the cap still holds
        async def chunks():
            for _ in range(64):
                yield b"y" * 65536

        async with s.post(
            f"{base}/login", data=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as r:
            assert r.status == 413
        await login(s, base)
        deep = b"[" * 100_000 + b"]" * 100_000
        async with s.post(
            f"{base}/alerts/{ids['crisis']}/ack",
            data=deep,
            headers={"X-Vitalgate": "1", "Content-Type": "application/json"},
        ) as r:
            assert r.status in (400, 413), r.status
        async with s.post(
            f"{base}/alerts/{ids['crisis']}/ack",
            data=b"[" * 5000 + b"]" * 5000,
            headers={"X-Vitalgate": "1", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 400 and "nested" in (await r.json())["error"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(
            f"{base}/api/alerts/{ids['crisis']}/snooze", data=b"[" * 5000 + b"]" * 5000, headers=headers
        ) as r:
            assert r.status == 400 and "nested" in (await r.json())["error"]
        async with s.post(
            f"{base}/api/silences",
            json={"matchers": {"patient_id": "p-0001"}, "duration": "99999999d", "reason": "test", "by": "tech"},
            headers=headers,
        ) as r:
            assert r.status == 422, await r.text()
        # the box still answers
        async with s.get(f"{base}/healthz") as r:
            assert r.status in (200, 503)


def test_a_cookie_with_non_ascii_characters_is_refused_not_a_crash() -> None:
    from console.web.session import SessionStore

    store = SessionStore()
    for cookie in ("a.中", "a.b\u00e9", "中文.x", "\udcff.\udcfe", "x" * 10_000):
        assert store.get(cookie) is None
    who = store.get(store.open("李医生", "doctor"))
    assert who is not None and (who.name, who.role, who.how) == ("李医生", "doctor", "cookie")


async def test_a_live_stream_that_is_cancelled_leaves_no_pending_task() -> None:
    """Issue 16: each SSE disconnect left a pending queue-get task behind."""
    from console.web.live import LiveHub

    hub = LiveHub(asyncio.Event())
    before = len(asyncio.all_tasks())
    gen = hub.stream()
    assert (await gen.__anext__()).startswith("retry:")
    waiting = asyncio.ensure_future(gen.__anext__())  # now blocked in the wait for an event
    await asyncio.sleep(0.05)
    waiting.cancel()  # what Starlette does when the client leaves
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await gen.aclose()
    await asyncio.sleep(0)  # let the cancellations land
    assert hub.clients == 0
    assert len(asyncio.all_tasks()) <= before, [t for t in asyncio.all_tasks()]


def test_login_guard_locks_a_guessing_source_and_a_distributed_guess() -> None:
    from console.web import login_guard as lg

    now = [0.0]
    g = lg.LoginGuard(clock=lambda: now[0])
    for _ in range(lg.PER_SOURCE_FAILURES):
        assert g.retry_after("10.0.0.9") is None
        g.failed("10.0.0.9")
    wait = g.retry_after("10.0.0.9")
    assert wait is not None and 0 < wait <= lg.WINDOW_S
    assert g.retry_after("10.0.0.7") is None  # another tablet is not locked out
    now[0] += lg.WINDOW_S + 1
    assert g.retry_after("10.0.0.9") is None  # the lock ends with the window
    for i in range(lg.GLOBAL_FAILURES):  # one guess each from many addresses
        g.failed(f"10.1.{i // 250}.{i % 250}")
    assert g.retry_after("10.0.0.7") is not None


async def test_parallel_password_guessing_is_cut_off(tmp_path):
    """Issue 16: ~37 guesses/s were accepted in parallel; now a source is locked out after 10."""
    from console.web import login_guard as lg

    async with console(tmp_path) as (gw, base, ids), client_session() as s:

        async def guess(i: int) -> int:
            async with s.post(f"{base}/login", data={"password": f"guess-{i:04d}-xxxxxxxx", "name": "x"}) as r:
                return r.status

        statuses = await asyncio.gather(*(guess(i) for i in range(40)))
        assert statuses.count(401) == lg.PER_SOURCE_FAILURES
        assert statuses.count(429) == 40 - lg.PER_SOURCE_FAILURES
        async with s.post(
            f"{base}/login", data={"password": PEOPLE["李医生"][1], "name": "李医生"}, allow_redirects=False
        ) as r:
            assert r.status == 429  # even the right password, for now


async def test_console_over_https_sets_a_secure_cookie(tmp_path):
    """Issue 16 item 8: with http.tls_cert/tls_key the console serves HTTPS and the cookie is Secure."""
    import shutil
    import ssl
    import subprocess

    from tests.support.clinic import clinic_config

    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by the README's test command"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    storage = tmp_path / "var"
    seed_clinic(storage)
    port = free_port()
    base_cfg = clinic_config(storage, http_port=port)
    cfg = base_cfg.model_copy(
        update={"http": base_cfg.http.model_copy(update={"tls_cert": str(cert), "tls_key": str(key)})}
    )
    gw = Gateway(cfg, clock=lambda: NOW + timedelta(seconds=1))
    stop = asyncio.Event()
    server = ApiServer(gw.http_app, "127.0.0.1", port, (str(cert), str(key)))
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.started.wait(), 10)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"https://127.0.0.1:{port}/login",
                data={"password": TOKEN, "name": "x", "next": "/"},
                allow_redirects=False,
                ssl=ctx,
            ) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
                assert "Secure" in cookie and "HttpOnly" in cookie
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served on that port
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    await r.read()
    finally:
        gw.stop_event.set()
        stop.set()
        await asyncio.wait_for(task, 10)
        gw.http_app.state.console.close()
        gw.store.close()
        gw.alerts.close()


def test_tls_needs_both_files() -> None:
    from box.config import ConfigError, load_config_text

    with pytest.raises(ConfigError) as exc:
        load_config_text("clinic: c1\nhttp: {port: 8080, token: q7Jx-2vLp9sRkWm4TzYb, tls_cert: /nonexistent.pem}\n")
    assert any("tls_cert and tls_key together" in str(p) for p in exc.value.problems)
