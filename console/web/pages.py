"""The village doctor's console: pages and actions mounted on the gateway's HTTP app.

Routes (all but /login, /healthz and /static need a signed-in session or the
bearer token; HTML pages redirect to /login, everything else answers 401). Each
route also needs its role's right (console/accounts.py): "clinical" for the
pages with patients' data, "devices" for /devices and /metrics, "act" for the
POSTs; a role without it gets 403:

- `GET|POST /login`, `GET|POST /logout`     sign in with an account's name and password (or, without
                                            accounts, the shared token); logout forgets the session server-side
- `GET  /`                                  active alerts by severity, live (what a doctor sees first)
- `GET  /patients`, `/patients/{id}`        patient list; one patient's trends, live ECG, alerts, reports
- `GET  /devices`                           battery, last seen, connection state
- `GET  /alerts/{id}`                       an alert's evidence (ECG strip) and audit trail
- `POST /alerts/{id}/ack`, `/alerts/{id}/snooze {"duration": "30m"}`   (cookie + `X-Vitalgate: 1`, or bearer)
- `GET  /events`                            Server-Sent Events: every alert transition
- `GET  /fragments/alerts`                  the alert lists as HTML (what the live page swaps in)
- `GET  /patients/{id}/ecg.svg?seconds=10`  the latest stored ECG as an SVG strip (the live strip polls it)
- `GET  /patients/{id}/report?period=7d`, `/patients/{id}/report.pdf?period=7d`   the patient report
- `GET  /patients/{id}/fhir.json?since=7d`  FHIR R4 Bundle of the patient's observations
- `GET  /screening[?patient=P]`             AF screening: today's strips (or one patient's), the referral list
- `GET  /fragments/screening[?patient=P]`   its lists as HTML (the page swaps them in every few seconds)
- `GET  /screening/{key}`, `/screening/{key}/strip.svg[?rows=1]`   one strip, on ECG paper
- `POST /screening/{key}/refer {"note": ...}`   mark the patient referred (who and when are kept)
- `GET  /metrics` (token or session), `GET /healthz` (open)

Language: zh-CN unless `?lang=en` (remembered in a cookie) or the cookie says en.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import accounts, i18n
from console.clinic_records import ClinicRecords
from console.web import session, svg_charts, views
from console.web.live import LiveHub
from console.web.login_guard import LoginGuard
from console.web.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from console.web.metrics import health, render_metrics
from console.web.sources import ConsoleSources
from dispatch.request_body import API_MAX_BYTES, LOGIN_MAX_BYTES, json_object, read_capped
from stream.models import parse_duration

log = logging.getLogger("vitalgate.console")

HERE = Path(__file__).parent
SNOOZE_CHOICES = ("15m", "30m", "1h", "2h")
PERIOD_CHOICES = ("7d", "14d", "30d", "90d")
WRONG_PASSWORD_DELAY_S = 1.0  # slows guessing; one clinic, a handful of users
PASSWORD_CHECKS_AT_ONCE = 2  # each scrypt check takes 32 MiB and a core for ~0.3 s: a burst waits its turn
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Console:
    def __init__(self, src: ConsoleSources) -> None:
        self.src = src
        self.token = src.token
        self.tls = src.tls  # HTTPS: the session cookie is Secure
        self.records = ClinicRecords(src.storage)
        self.hub = LiveHub(src.stopping)
        self.guard = LoginGuard()
        self.sessions = session.SessionStore()
        # people's accounts by folded name: (name as configured, role, parsed hash)
        self.accounts = {
            a.name.strip().casefold(): (a.name, a.role, accounts.parse_hash(a.password_hash)) for a in src.accounts
        }
        self._decoy = accounts.decoy_hash()
        self._checking: asyncio.Semaphore | None = None
        src.desk.listen(self.hub.on_transition)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # ------------------------------------------------------------ plumbing

    def routes(self) -> list:
        return [
            Route("/", self.alerts_page, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["GET", "POST"]),
            Route("/patients", self.patients_page, methods=["GET"]),
            Route("/patients/{patient_id}", self.patient_page, methods=["GET"]),
            Route("/patients/{patient_id}/ecg.svg", self.ecg_svg, methods=["GET"]),
            Route("/patients/{patient_id}/report", self.report_html, methods=["GET"]),
            Route("/patients/{patient_id}/report.pdf", self.report_pdf, methods=["GET"]),
            Route("/patients/{patient_id}/fhir.json", self.fhir_json, methods=["GET"]),
            Route("/screening", self.screening_page, methods=["GET"]),
            Route("/fragments/screening", self.screening_fragment, methods=["GET"]),
            Route("/screening/{strip_key}", self.strip_page, methods=["GET"]),
            Route("/screening/{strip_key}/strip.svg", self.strip_svg, methods=["GET"]),
            Route("/screening/{strip_key}/refer", self.refer_strip, methods=["POST"]),
            Route("/devices", self.devices_page, methods=["GET"]),
            Route("/alerts/{alert_id}", self.alert_page, methods=["GET"]),
            Route("/alerts/{alert_id}/ack", self.ack, methods=["POST"]),
            Route("/alerts/{alert_id}/snooze", self.snooze, methods=["POST"]),
            Route("/fragments/alerts", self.alerts_fragment, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def _who(self, request: Request) -> session.SignedIn | None:
        return session.identity(request, self.token, self.sessions)

    def _gate(self, request: Request, what: str, html: bool) -> session.SignedIn | Response:
        """Who asks, if they are signed in and their role may do ``what``; else the answer to send."""
        who = self._who(request)
        if who is None:
            return self._deny(request, html)
        if not who.may(what):
            role = i18n.t(self._lang(request), f"role.{who.role}")
            if html:
                return self._render(
                    request,
                    "error.html",
                    status=403,
                    message=i18n.t(self._lang(request), "error.forbidden").format(role=role),
                )
            return JSONResponse({"error": f"the account's role ({who.role}) may not do this"}, status_code=403)
        return who

    def _lang(self, request: Request) -> str:
        return i18n.pick_lang(request.query_params.get("lang"), request.cookies.get(session.LANG_COOKIE))

    def _deny(self, request: Request, html: bool) -> Response:
        if html:
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={urllib.parse.quote(nxt)}", status_code=303)
        return JSONResponse({"error": "sign in, or send Authorization: Bearer <token>"}, status_code=401)

    def _render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = self._lang(request)
        who = self._who(request)
        base = {
            "lang": lang,
            "t": i18n.translator(lang),
            "ago": lambda s: i18n.ago(lang, s),
            "dur": lambda s: i18n.duration_text(lang, s),
            "clinic": self.src.clinic,
            "user": who.name if who else None,
            "role": who.role if who else None,
            "may_clinical": bool(who and who.may("clinical")),
            "may_devices": bool(who and who.may("devices")),
            "may_act": bool(who and who.may("act")),
            "path": request.url.path,
            "snooze_choices": SNOOZE_CHOICES,
            "other_lang": "en" if lang == "zh" else "zh",
        }
        html = self.env.get_template(template).render(**base, **ctx)
        resp = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if request.query_params.get("lang") in i18n.LANGS:
            resp.set_cookie(session.LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", httponly=True)
        return resp

    def _csrf_ok(self, request: Request, how: str) -> bool:
        return how == "bearer" or request.headers.get(session.CSRF_HEADER) == "1"

    # ------------------------------------------------------------ login

    async def login_page(self, request: Request) -> Response:
        return self._render(
            request,
            "login.html",
            next=session.safe_next(request.query_params.get("next")),
            bad=False,
            with_accounts=bool(self.accounts),
        )

    async def _check_password(self, password: str, h: accounts.ScryptHash) -> bool:
        if self._checking is None:
            self._checking = asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)
        async with self._checking:  # scrypt in a worker thread: the event loop keeps serving alerts
            return await asyncio.to_thread(accounts.verify, password, h)

    async def login(self, request: Request) -> Response:
        source = request.client.host if request.client else "?"
        wait = self.guard.retry_after(source)
        if wait is None:
            # counted as a failure before anything is awaited, so a parallel burst cannot slip past the
            # check; a right password clears it
            self.guard.failed(source)
        else:
            log.warning("console login refused: too many wrong passwords", extra={"client": source})
            return _too_many(wait)
        # unauthenticated: never read more than a login form needs (413 past it)
        form = urllib.parse.parse_qs((await read_capped(request, LOGIN_MAX_BYTES)).decode("utf-8", "replace"))
        password = (form.get("password") or [""])[0]
        name = (form.get("name") or [""])[0].strip()[: session.MAX_NAME]
        nxt = session.safe_next((form.get("next") or ["/"])[0])
        if self.accounts:
            # people's accounts: the account is counted before the (awaited) check as well
            wait = self.guard.account_retry_after(name)
            if wait is not None:
                self.guard.withdraw(source)
                log.warning(
                    "console login refused: account locked after wrong passwords", extra={"client": source, "by": name}
                )
                return _too_many(wait)
            self.guard.account_failed(name)
            account = self.accounts.get(name.casefold())
            # an unknown name is checked against a decoy, so the answer takes as long as for a known one
            ok = await self._check_password(password, account[2] if account else self._decoy)
            ok = ok and account is not None
            name, role = (account[0], account[1]) if account else (name, "")
        else:
            # no accounts configured: the shared clinic token is the password and the name is typed
            ok = session.password_ok(self.token, password)
            name, role = name or "village-doctor", "doctor"
        if not ok:
            await asyncio.sleep(WRONG_PASSWORD_DELAY_S)
            log.warning("console login refused", extra={"client": source, "by": name})
            return self._render(
                request, "login.html", status=401, next=nxt, bad=True, with_accounts=bool(self.accounts)
            )
        self.guard.succeeded(source, name if self.accounts else None)
        if nxt == "/" and role in accounts.HOME:
            nxt = accounts.HOME[role]
        self.sessions.close(request.cookies.get(session.COOKIE))  # a session the browser still held ends here
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(
            session.COOKIE,
            self.sessions.open(name, role),
            max_age=session.SESSION_TTL_S,
            httponly=True,
            samesite="strict",
            path="/",
            secure=self.tls,
        )
        log.info("console login", extra={"by": name, "role": role, "client": source})
        return resp

    async def logout(self, request: Request) -> Response:
        """Ends the session on the server: the cookie's id is forgotten, so a copy of it no longer works."""
        who = self.sessions.close(request.cookies.get(session.COOKIE))
        if who is not None:
            log.info("console logout", extra={"by": who.name})
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict", secure=self.tls)
        return resp

    # ------------------------------------------------------------ pages

    async def alerts_page(self, request: Request) -> Response:
        signed_in = self._who(request)
        if signed_in is not None and not signed_in.may("clinical") and signed_in.role in accounts.HOME:
            return RedirectResponse(accounts.HOME[signed_in.role], status_code=303)
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        return self._render(request, "alerts.html", nav="alerts", v=views.alerts_view(self.src))

    async def alerts_fragment(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        return self._render(request, "alerts_fragment.html", v=views.alerts_view(self.src))

    async def patients_page(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        rows = views.patients_view(self.src, self.records)
        for r in rows:
            r["spark"] = Markup(svg_charts.sparkline(r["systolic_week"], limit=views.BP_TARGET[0]))
        return self._render(request, "patients.html", nav="patients", rows=rows)

    async def patient_page(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        pid = request.path_params["patient_id"]
        p = self.src.patient(pid)
        if p is None:
            return self._render(request, "error.html", status=404, message=f"no patient {pid}")
        lang = self._lang(request)
        tr = i18n.translator(lang)
        days = 30 if request.query_params.get("days") == "30" else 7
        now = self.src.clock()
        since = now - timedelta(days=days)
        summary = views.patient_summary(self.src, self.records, pid, now, self.src.alerts.active())
        sys_, dia = views.bp_points(self.records.readings(pid, "blood_pressure", since=since))
        bp_chart = svg_charts.trend_chart(
            [svg_charts.Series("SBP", "#c62828", sys_), svg_charts.Series("DBP", "#1565c0", dia)],
            since,
            now,
            (60, 180),
            svg_charts.Guides(hlines=[(140, "#c62828", "140"), (90, "#1565c0", "90")]),
            title=tr("patient.bp_trend"),
        )
        glu = views.glucose_points(self.records.readings(pid, "glucose", since=since))
        glu_chart = svg_charts.trend_chart(
            [svg_charts.Series("", "#6a1b9a", glu)],
            since,
            now,
            (2.0, 14.0),
            svg_charts.Guides(hlines=[(3.9, "#e65100", "3.9"), (10.0, "#2e7d32", "10.0")], band=views.GLUCOSE_RANGE),
            title=tr("patient.glucose_trend"),
        )
        hr = views.hourly_hr(self.records.rhythm(pid, since=since))
        hr_chart = (
            svg_charts.trend_chart(
                [svg_charts.Series("", "#2e7d32", hr, dots=len(hr) < 200)],
                since,
                now,
                (50, 110),
                svg_charts.Guides(hlines=[(100, "#e65100", "100"), (60, "#1565c0", "60")]),
                title=tr("report.hr"),
            )
            if hr
            else ""
        )
        alerts = [views.alert_row(s, now) for s in self.src.alerts.list_alerts(None, pid, 50)]
        devices = [d for d in views.device_rows(self.src, self.records, now) if d["patient_id"] == pid]
        strips = [views.strip_row(s, now) for s in self.records.strips(pid, limit=5)]
        return self._render(
            request,
            "patient.html",
            nav="patients",
            p=summary,
            days=days,
            bp_chart=Markup(bp_chart),
            glu_chart=Markup(glu_chart),
            hr_chart=Markup(hr_chart),
            has_bp=bool(sys_),
            has_glu=bool(glu),
            alerts=alerts,
            devices=devices,
            periods=PERIOD_CHOICES,
            strips=strips,
        )

    async def ecg_svg(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        pid = request.path_params["patient_id"]
        if self.src.patient(pid) is None:
            return PlainTextResponse("unknown patient", status_code=404)
        try:
            seconds = max(2.0, min(30.0, float(request.query_params.get("seconds", "10"))))
        except ValueError:
            seconds = 10.0
        strip = self.records.ecg_latest(pid, seconds)
        lang = self._lang(request)
        if strip is None:
            return HTMLResponse(f'<p class="muted">{i18n.t(lang, "patient.ecg_none")}</p>', headers=SECURITY_HEADERS)
        end = strip.start + timedelta(seconds=strip.seconds)
        rhythm = self.records.latest_rhythm(pid)
        label = f"{strip.device_id} · {end.strftime('%H:%M:%S')}"
        if rhythm:
            label += f" · {i18n.t(lang, 'rhythm.' + rhythm['rhythm'])}"
            if rhythm["hr_bpm"]:
                label += f" {rhythm['hr_bpm']:.0f}/min"
        if strip.lead_off:
            label += " · lead off"
        svg = svg_charts.ecg_strip(strip.samples_uv, strip.fs, label=label)
        return HTMLResponse(svg, headers={**SECURITY_HEADERS, "X-Ecg-End": end.isoformat()})

    async def devices_page(self, request: Request) -> Response:
        who = self._gate(request, "devices", html=True)
        if isinstance(who, Response):
            return who
        return self._render(request, "devices.html", nav="devices", rows=views.device_rows(self.src, self.records))

    async def alert_page(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        aid = request.path_params["alert_id"]
        s = self.src.alerts.get(aid)
        if s is None:
            return self._render(request, "error.html", status=404, message=f"no alert {aid}")
        now = self.src.clock()
        ev = dict(s.alert.evidence)
        strip = ev.pop("strip", None)
        strip_svg = ""
        if isinstance(strip, dict) and strip.get("samples_uv"):
            strip_svg = svg_charts.ecg_strip(
                strip["samples_uv"], float(strip.get("fs") or 250), label=f"t={strip.get('start_s', 0)} s"
            )
        trail = self.src.alerts.transitions(aid)
        return self._render(
            request,
            "alert.html",
            nav="alerts",
            a=views.alert_row(s, now),
            evidence=ev,
            strip_svg=Markup(strip_svg),
            trail=trail,
        )

    # ------------------------------------------------------------ AF screening

    def _screening_patient(self, request: Request) -> str | None:
        pid = request.query_params.get("patient") or None
        return pid if pid and self.src.patient(pid) is not None else None

    async def screening_page(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        v = views.screening_view(self.records, self.src.clock(), self._screening_patient(request))
        return self._render(request, "screening.html", nav="screening", v=v)

    async def screening_fragment(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        v = views.screening_view(self.records, self.src.clock(), self._screening_patient(request))
        return self._render(request, "_screening_lists.html", v=v)

    async def strip_page(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=True)
        if isinstance(who, Response):
            return who
        key = request.path_params["strip_key"]
        s = self.records.strip(key)
        if s is None:
            return self._render(request, "error.html", status=404, message=f"no strip {key}")
        lang = self._lang(request)
        ts = s["ts"][:19].replace("T", " ")
        paper = svg_charts.ecg_paper(
            s.pop("samples_uv"),
            s["fs"],
            label=f"{s['patient_id']} · {ts} · {i18n.t(lang, 'screen.label.' + s['label'])}",
        )
        return self._render(
            request, "strip.html", nav="screening", s=views.strip_row(s, self.src.clock()), paper=Markup(paper)
        )

    async def strip_svg(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        s = self.records.strip(request.path_params["strip_key"])
        if s is None:
            return PlainTextResponse("no such strip", status_code=404)
        rows = 1 if request.query_params.get("rows") == "1" else None
        svg = svg_charts.ecg_paper(s["samples_uv"], s["fs"], rows=rows)
        return Response(svg, media_type="image/svg+xml", headers=SECURITY_HEADERS)

    async def refer_strip(self, request: Request) -> Response:
        got = await self._action(request)
        if isinstance(got, Response):
            return got
        by, body = got
        key = request.path_params["strip_key"]
        if self.src.strips is None:
            return JSONResponse({"error": "this console cannot write (no gateway behind it)"}, status_code=503)
        done = self.src.strips.refer_strip(key, by, str(body.get("note") or "")[:500])
        if done is None:
            return JSONResponse({"error": f"no strip {key}"}, status_code=404)
        s = self.records.strip(key)
        row = {k: v for k, v in (s or {}).items() if k != "samples_uv"}
        if not done:
            return JSONResponse(
                {"error": f"already marked referred by {row.get('referred_by')}", "strip": row}, status_code=409
            )
        return JSONResponse({"strip": row})

    # ------------------------------------------------------------ actions

    async def _action(self, request: Request) -> tuple[str, dict] | Response:
        who = self._gate(request, "act", html=False)
        if isinstance(who, Response):
            return who
        if not self._csrf_ok(request, who.how):
            return JSONResponse({"error": "missing X-Vitalgate header"}, status_code=403)
        raw = await read_capped(request, API_MAX_BYTES)
        try:
            body = json_object(raw) if raw else {}
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        # a person signed in is named by their session (the account); the API token says who in "by"
        by = who.name if who.how == "cookie" else str(body.get("by") or session.TOKEN_NAME)[:200]
        return by, body

    async def ack(self, request: Request) -> Response:
        got = await self._action(request)
        if isinstance(got, Response):
            return got
        by, _ = got
        aid = request.path_params["alert_id"]
        s = self.src.alerts.get(aid)
        if s is None:
            return JSONResponse({"error": f"no alert {aid}"}, status_code=404)
        alert = await self.src.desk.acknowledge(aid, by)
        if alert is None:
            return JSONResponse({"error": f"alert is {s.alert.state.value}, not firing"}, status_code=409)
        return JSONResponse({"alert": self.src.alerts.get(aid).to_api()})  # type: ignore[union-attr]

    async def snooze(self, request: Request) -> Response:
        got = await self._action(request)
        if isinstance(got, Response):
            return got
        by, body = got
        aid = request.path_params["alert_id"]
        try:
            duration = parse_duration(body.get("duration", "30m"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        s = self.src.alerts.get(aid)
        if s is None:
            return JSONResponse({"error": f"no alert {aid}"}, status_code=404)
        alert = await self.src.desk.snooze(aid, by, duration, str(body.get("why", ""))[:1000])
        if alert is None:
            return JSONResponse(
                {"error": f"alert is {s.alert.state.value}; only a firing alert can be snoozed"}, status_code=409
            )
        return JSONResponse({"alert": self.src.alerts.get(aid).to_api()})  # type: ignore[union-attr]

    async def events(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        return StreamingResponse(
            self.hub.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------ reports and exports

    def _period(self, request: Request, name: str = "period", default: str = "7d") -> timedelta | None:
        try:
            d = parse_duration(request.query_params.get(name, default))
        except ValueError:
            return None
        return d if timedelta(hours=1) <= d <= timedelta(days=366) else None

    async def report_html(self, request: Request) -> Response:
        return await self._report(request, pdf=False)

    async def report_pdf(self, request: Request) -> Response:
        return await self._report(request, pdf=True)

    async def _report(self, request: Request, pdf: bool) -> Response:
        who = self._gate(request, "clinical", html=not pdf)
        if isinstance(who, Response):
            return who
        pid = request.path_params["patient_id"]
        if self.src.patient(pid) is None:
            return PlainTextResponse("unknown patient", status_code=404)
        period = self._period(request)
        if period is None:
            return PlainTextResponse("period must be a duration between 1h and 366d, such as 7d", status_code=400)
        lang = self._lang(request)
        from console.patient_report import render_html, render_pdf

        storage, clinic, now = self.src.storage, self.src.clinic, self.src.clock()
        t0 = time.monotonic()
        if pdf:  # matplotlib in a worker thread: the event loop keeps serving alerts meanwhile
            data = await asyncio.to_thread(render_pdf, storage, clinic, pid, period, now, lang)
            log.info("report rendered", extra={"patient_id": pid, "seconds": round(time.monotonic() - t0, 2)})
            return Response(
                data,
                media_type="application/pdf",
                headers={
                    **SECURITY_HEADERS,
                    "Content-Disposition": f'inline; filename="report-{pid}-{now:%Y%m%d}.pdf"',
                },
            )
        html = await asyncio.to_thread(render_html, storage, clinic, pid, period, now, lang)
        headers = {
            **SECURITY_HEADERS,
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        }
        return HTMLResponse(html, headers=headers)

    async def fhir_json(self, request: Request) -> Response:
        who = self._gate(request, "clinical", html=False)
        if isinstance(who, Response):
            return who
        pid = request.path_params["patient_id"]
        if self.src.patient(pid) is None:
            return JSONResponse({"error": "unknown patient"}, status_code=404)
        period = self._period(request, "since", "7d")
        if period is None:
            return JSONResponse({"error": "since must be a duration such as 7d"}, status_code=400)
        from console.fhir_export import export_bundle

        now = self.src.clock()
        bundle = await asyncio.to_thread(export_bundle, self.src.storage, self.src.clinic, pid, now - period, now)
        return JSONResponse(
            bundle,
            media_type="application/fhir+json",
            headers={
                "Content-Disposition": f'attachment; filename="fhir-{pid}-{now:%Y%m%d}.json"',
                "Cache-Control": "no-store",
            },
        )

    # ------------------------------------------------------------ metrics and health

    async def metrics(self, request: Request) -> Response:
        who = self._gate(request, "devices", html=False)
        if isinstance(who, Response):
            return who
        text = render_metrics(self.src, views.device_rows(self.src, self.records), self.hub.clients)
        return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        status, body = health(self.src)
        return JSONResponse(body, status_code=status)

    def close(self) -> None:
        self.records.close()


def _too_many(wait: float) -> Response:
    return PlainTextResponse(
        "too many wrong passwords; try again later 密码错误次数过多，请稍后再试",
        status_code=429,
        headers={"Retry-After": str(int(wait) + 1)},
    )


def mount_console(app: Starlette, src: ConsoleSources) -> Console:
    """Add the doctor's console to the gateway's HTTP app (`dispatch.http_api.create_app`)."""
    console = Console(src)
    app.router.routes.extend(console.routes())
    app.state.console = console
    return console
