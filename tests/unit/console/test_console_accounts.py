"""People's console accounts (issue 16 item 7): `vitalgate passwd`, roles on every route, the account in the
audit trail, logout that ends the session on the server, lockout per account; and a config without
accounts keeps the shared token as before."""

from __future__ import annotations

import asyncio
import io
import re

import aiohttp
import pytest

from box.cli import main as cli_main
from console import accounts
from console.web import login_guard as lg
from console.web.session import COOKIE, SessionStore
from tests.support.clinic import TOKEN
from tests.support.console import PEOPLE, client_session, console, login

CSRF = {"X-Vitalgate": "1"}

# Every console route, what it needs, and the path to try. A route added to the console without a row
# here fails test_every_route_is_in_the_table: each new route must say who may use it.
#   open: anyone; clinical: doctor and reader; devices: all three roles; act: doctor only
ROUTES = [
    ("GET", "/", "clinical", "/"),
    ("GET", "/login", "open", "/login"),
    ("POST", "/login", "open", None),
    ("GET", "/logout", "open", None),
    ("POST", "/logout", "open", None),
    ("GET", "/patients", "clinical", "/patients"),
    ("GET", "/patients/{patient_id}", "clinical", "/patients/p-0001"),
    ("GET", "/patients/{patient_id}/ecg.svg", "clinical", "/patients/p-0001/ecg.svg"),
    ("GET", "/patients/{patient_id}/report", "clinical", "/patients/p-0001/report?period=forever"),
    ("GET", "/patients/{patient_id}/report.pdf", "clinical", "/patients/p-0001/report.pdf?period=forever"),
    ("GET", "/patients/{patient_id}/fhir.json", "clinical", "/patients/p-0001/fhir.json?since=forever"),
    ("GET", "/screening", "clinical", "/screening"),
    ("GET", "/fragments/screening", "clinical", "/fragments/screening"),
    ("GET", "/screening/{strip_key}", "clinical", "/screening/nope"),
    ("GET", "/screening/{strip_key}/strip.svg", "clinical", "/screening/nope/strip.svg"),
    ("POST", "/screening/{strip_key}/refer", "act", "/screening/nope/refer"),
    ("GET", "/devices", "devices", "/devices"),
    ("GET", "/alerts/{alert_id}", "clinical", "/alerts/{crisis}"),
    ("POST", "/alerts/{alert_id}/ack", "act", "/alerts/{crisis}/ack"),
    ("POST", "/alerts/{alert_id}/snooze", "act", "/alerts/{crisis}/snooze"),
    ("GET", "/fragments/alerts", "clinical", "/fragments/alerts"),
    ("GET", "/events", "clinical", "/events"),
    ("GET", "/metrics", "devices", "/metrics"),
    ("GET", "/healthz", "open", "/healthz"),
]
HTML_PAGES = {
    "/",
    "/patients",
    "/patients/{patient_id}",
    "/screening",
    "/screening/{strip_key}",
    "/devices",
    "/alerts/{alert_id}",
    "/patients/{patient_id}/report",
}


async def test_every_route_is_in_the_table(tmp_path):
    async with console(tmp_path) as (gw, base, ids):
        served = {
            (m, r.path)
            for r in gw.http_app.state.console.routes()
            if hasattr(r, "methods")
            for m in r.methods
            if m != "HEAD"
        }
    assert served == {(m, p) for m, p, _, _ in ROUTES}


@pytest.mark.parametrize("role_name", ["county-zhao", "tech-chen", "李医生", None])
async def test_each_role_gets_what_it_may_and_403_for_the_rest(tmp_path, role_name):
    """Roles are enforced on every route: a reader reads but cannot acknowledge, snooze or refer; a
    technician sees devices and metrics only; a doctor does all; nobody signed in gets a login."""
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        role = PEOPLE[role_name][0] if role_name else None
        if role_name:
            home = await login(s, base, role_name)
            assert home == ("/devices" if role == "technician" else "/")
        rights = accounts.PERMISSIONS.get(role or "", frozenset())
        for method, route, needs, path in ROUTES:
            if path is None:
                continue
            url = base + path.format(crisis=ids["crisis"])
            if method == "POST":
                async with s.post(url, json={"duration": "30m"}, headers=CSRF, allow_redirects=False) as r:
                    status = r.status
            else:
                async with s.get(url, allow_redirects=False) as r:
                    status, location = r.status, r.headers.get("Location", "")
            if needs == "open":
                assert status == 200, (route, status)
            elif role is None:
                assert status == (303 if route in HTML_PAGES else 401), (route, status)
            elif needs in rights:
                assert status not in (303, 401, 403), (role, route, status)
            elif route == "/" and role == "technician":
                assert status == 303 and location == "/devices"  # sent to the page it may see
            else:
                assert status == 403, (role, route, status)
        crisis = gw.alerts.get(ids["crisis"])
        acted = [t for t in gw.alerts.transitions(ids["crisis"]) if t["what"] in ("acknowledged", "snoozed")]
        if role == "doctor":
            assert crisis.alert.state.value == "acknowledged" and acted[-1]["detail"]["by"] == "李医生"
        else:  # a reader's or technician's click changed nothing, and left no trace in the audit trail
            assert crisis.alert.state.value == "firing" and not acted


async def test_a_readers_page_has_no_buttons_and_a_technicians_no_patients(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        await login(s, base, "county-zhao")
        async with s.get(base + "/") as r:
            page = await r.text()
        assert "高血压危象" in page and "data-ack=" not in page and "data-snooze=" not in page
        assert "county-zhao · 查阅" in page
    async with console(tmp_path / "2") as (gw, base, ids), client_session() as s:
        await login(s, base, "tech-chen")
        async with s.get(base + "/devices") as r:
            page = await r.text()
        assert r.status == 200 and "心电贴" in page and 'id="nav-devices"' in page
        assert 'id="nav-alerts"' not in page and 'href="/patients/' not in page  # and so no live alert stream
        async with s.get(base + "/patients/p-0001") as r:
            assert r.status == 403 and "技术员" in await r.text()


async def test_the_audit_trail_names_the_account_and_the_token_keeps_its_by(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        await login(s, base, "王医生")
        async with s.post(
            f"{base}/alerts/{ids['crisis']}/snooze", json={"duration": "15m", "by": "李医生"}, headers=CSRF
        ) as r:
            assert r.status == 200
        async with s.post(f"{base}/alerts/{ids['crisis']}/ack", json={"by": "李医生"}, headers=CSRF) as r:
            assert r.status == 200
        trail = [(t["what"], t["detail"].get("by")) for t in gw.alerts.transitions(ids["crisis"])]
        assert ("snoozed", "王医生") in trail and ("acknowledged", "王医生") in trail
        assert all(by != "李医生" for _, by in trail)
    async with console(tmp_path / "2") as (gw, base, ids), aiohttp.ClientSession() as s:
        async with s.post(
            f"{base}/alerts/{ids['crisis']}/ack",
            json={"by": "county-script"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200 and (await r.json())["alert"]["acknowledged_by"] == "county-script"


async def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_is_refused(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s, client_session() as thief:
        await login(s, base, "李医生")
        stolen = next(c.value for c in s.cookie_jar if c.key == COOKIE)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", stolen)  # a random id, nothing to read or forge
        thief.cookie_jar.update_cookies({COOKIE: stolen})
        async with thief.get(base + "/", allow_redirects=False) as r:
            assert r.status == 200  # a copy works while the session is open...
        console_ = gw.http_app.state.console
        assert len(console_.sessions) == 1
        async with s.get(base + "/logout", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        assert len(console_.sessions) == 0
        async with thief.get(base + "/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")  # ...and not after logout
        async with thief.post(f"{base}/alerts/{ids['crisis']}/ack", json={}, headers=CSRF) as r:
            assert r.status == 401
        assert gw.alerts.get(ids["crisis"]).alert.state.value == "firing"
        # signing in again (as someone else, on the same tablet) replaces the session the browser held
        await login(s, base, "county-zhao")
        await login(s, base, "王医生")
        assert len(console_.sessions) == 1


def test_sessions_expire_and_the_store_stays_bounded() -> None:
    now = [0.0]
    store = SessionStore(ttl_s=100, clock=lambda: now[0], max_sessions=3)
    first = store.open("李医生", "doctor")
    now[0] = 99.0
    assert store.get(first) is not None
    now[0] = 100.0
    assert store.get(first) is None and len(store) == 0  # expired: refused and forgotten
    ids = [store.open(f"p{i}", "reader") for i in range(4)]
    assert len(store) == 3 and store.get(ids[0]) is None and store.get(ids[3]) is not None  # oldest goes first
    assert store.close(ids[3]) is not None and store.get(ids[3]) is None and store.close(ids[3]) is None


def test_the_login_guard_locks_an_account_guessed_from_many_addresses() -> None:
    now = [0.0]
    g = lg.LoginGuard(clock=lambda: now[0])
    for i in range(lg.PER_ACCOUNT_FAILURES):
        assert g.account_retry_after("王医生") is None
        g.failed(f"10.0.0.{i}")
        g.account_failed("王医生")
    assert g.account_retry_after("王医生") is not None and g.account_retry_after("李医生") is None
    assert g.retry_after("10.0.0.200") is None  # no single address is locked
    now[0] += lg.WINDOW_S + 1
    assert g.account_retry_after("王医生") is None
    g.account_failed("王医生")
    g.succeeded("10.0.0.1", "王医生")  # a right password forgives the account
    assert g.account_retry_after("王医生") is None


async def test_an_account_is_locked_for_every_address_after_ten_wrong_passwords(tmp_path):
    """Per-source lockout already held; now one account guessed at 10 times is refused from anywhere
    (another loopback address stands for another tablet), and the others still sign in."""
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        for i in range(lg.PER_ACCOUNT_FAILURES):
            async with s.post(f"{base}/login", data={"name": "王医生", "password": f"guess-{i:03d}-xyz"}) as r:
                assert r.status == 401
        other = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)), cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        async with other:
            async with other.post(
                f"{base}/login", data={"name": "王医生", "password": PEOPLE["王医生"][1]}, allow_redirects=False
            ) as r:
                assert r.status == 429 and int(r.headers["Retry-After"]) > 0
            assert await login(other, base, "李医生") == "/"  # that address and the other accounts are fine
            assert await login(other, base, "county-zhao") == "/"


async def test_names_sign_in_case_insensitively_and_an_unknown_name_is_refused(tmp_path):
    async with console(tmp_path) as (gw, base, ids), client_session() as s:
        async with s.post(f"{base}/login", data={"name": "nobody", "password": PEOPLE["李医生"][1]}) as r:
            assert r.status == 401
        async with s.post(f"{base}/login", data={"name": "", "password": PEOPLE["李医生"][1]}) as r:
            assert r.status == 401
        assert await login(s, base, "County-Zhao", PEOPLE["county-zhao"][1]) == "/"
        async with s.get(base + "/") as r:
            assert "county-zhao · 查阅" in await r.text()  # the session carries the configured name


async def test_a_config_without_accounts_keeps_the_shared_token_and_the_typed_name(tmp_path):
    async with console(tmp_path, accounts=False) as (gw, base, ids), client_session() as s:
        async with s.get(base + "/login") as r:
            assert "http.token" in await r.text()
        await login(s, base, "赵医生", password=TOKEN)
        async with s.post(f"{base}/alerts/{ids['crisis']}/ack", json={}, headers=CSRF) as r:
            assert r.status == 200 and (await r.json())["alert"]["acknowledged_by"] == "赵医生"
        async with s.get(base + "/logout", allow_redirects=False):
            pass
        async with s.get(base + "/", allow_redirects=False) as r:
            assert r.status == 303


# ---------------------------------------------------------------- vitalgate passwd


def _passwd(monkeypatch, capsys, *args: str, stdin: str | None = None, typed: list[str] | None = None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    if typed is not None:
        answers = iter(typed)
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    rc = cli_main(["passwd", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_passwd_prints_a_line_that_check_config_takes_and_that_signs_in(tmp_path, monkeypatch, capsys):
    pw = "qing-shan-lv-shui-2026"
    rc, out, err = _passwd(monkeypatch, capsys, "李医生", "--stdin", stdin=pw + "\n")
    assert rc == 0 and "http.accounts" in err
    line = out.strip()
    assert line.startswith('- {name: 李医生, role: doctor, password_hash: "$scrypt$ln=15,r=8,p=3$')
    assert pw not in out
    h = re.search(r'password_hash: "([^"]+)"', line).group(1)  # type: ignore[union-attr]
    assert accounts.verify(pw, h) and not accounts.verify(pw + "x", h)
    rc2, out2, _ = _passwd(monkeypatch, capsys, "李医生", "--stdin", stdin=pw + "\n")
    assert rc2 == 0 and out2 != out  # a fresh salt each time
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("clinic: c1\nhttp:\n  token: q7Jx-2vLp9sRkWm4TzYb\n  accounts:\n" + out, encoding="utf-8")
    assert cli_main(["check-config", str(cfg)]) == 0


def test_passwd_asks_twice_and_refuses_a_mismatch_or_a_weak_password(monkeypatch, capsys):
    rc, out, err = _passwd(
        monkeypatch, capsys, "tech-chen", "--role", "technician", typed=["chen-fixes-cuffs-42", "chen-fixes-cuffs-42"]
    )
    assert rc == 0 and "role: technician" in out
    rc, out, err = _passwd(monkeypatch, capsys, "tech-chen", typed=["chen-fixes-cuffs-42", "chen-fixes-cuffs-43"])
    assert rc == 2 and out == "" and "differ" in err
    for weak in ("short", "password-password", "aaaaaaaaaaaaaaaa"):
        rc, out, err = _passwd(monkeypatch, capsys, "tech-chen", "--stdin", stdin=weak + "\n")
        assert rc == 2 and out == "", weak
    rc, out, err = _passwd(monkeypatch, capsys, "dr li", "--stdin", stdin="qing-shan-lv-shui-2026\n")
    assert rc == 2 and "name" in err


def test_hashes_are_salted_scrypt_and_weak_or_malformed_ones_are_refused() -> None:
    h = accounts.parse_hash(accounts.hash_password("qing-shan-lv-shui-2026"))
    assert (h.log2_n, h.r, h.p, len(h.salt), len(h.digest)) == (15, 8, 3, 16, 32)
    with pytest.raises(ValueError, match="cost too low"):
        accounts.parse_hash(accounts.hash_password("qing-shan-lv-shui-2026", log2_n=12, p=1))
    for bad in ("qing-shan-lv-shui-2026", "$scrypt$ln=15,r=8,p=3$c2FsdA$aGFzaA", "$7$101$abc$def", ""):
        with pytest.raises(ValueError):
            accounts.parse_hash(bad)


def test_password_checks_run_off_the_event_loop_one_pair_at_a_time() -> None:
    """Each check holds 32 MiB for ~0.3 s: at most PASSWORD_CHECKS_AT_ONCE run together."""
    from console.web import pages

    assert pages.PASSWORD_CHECKS_AT_ONCE == 2
    h = accounts.parse_hash(accounts.hash_password("qing-shan-lv-shui-2026"))
    running, peak = [0], [0]
    real = accounts.verify

    def counting(pw, hh):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            return real(pw, hh)
        finally:
            running[0] -= 1

    class Box:
        _checking = None
        _check_password = pages.Console._check_password

    async def burst() -> list[bool]:
        box = Box()
        return await asyncio.gather(*(box._check_password("x" * i, h) for i in range(6)))  # type: ignore[attr-defined]

    import unittest.mock

    with unittest.mock.patch.object(accounts, "verify", counting):
        assert asyncio.run(burst()) == [False] * 6
    assert peak[0] <= 2
