"""The county's HTTP API and its live page (starlette + uvicorn, as the doctor's console).

Every `/api` call needs `Authorization: Bearer <http.token>` (compared in constant time):

* `GET /api/clinics` -- each clinic: online (offline ones first), why not, its last status, its
  backlog as the gateway reported it, its active alerts per tier;
* `GET /api/alerts?clinic=&state=active|all&patient=` -- every clinic's alerts in their latest state,
  county and emergency tiers first; `GET /api/alerts/{id}` adds the alert's whole history;
* `POST /api/alerts/{id}/ack {"by": ...}` -- sent down to the alert's clinic on `vg/{clinic}/ack`
  (`{"alert_id", "by"}`, what its gateway takes on that topic); 202 once the cluster stored it;
* `GET /api/readings?clinic=C&patient=P&since=ISO` -- one patient's stored readings in device-time
  order, one entry per measurement (without `clinic`: across clinics);
* `GET /api/weekly?days=7` -- the weekly meeting's figures (alerts per tier and clinic, time to
  acknowledge per tier; BP control rate and AF found per village and per clinic: county/weekly.py);
* `GET /healthz` -- this process: its partitions, the members it sees, counters (no token needed).

`/` is the page (zh-CN, county/page.html + page.js, condition and tier names from console/i18n.py
at `/labels.json`); it holds no data itself and calls the API with the token the user types, kept in
the tab's sessionStorage. `GET /api/weekly?format=csv` is the downloadable weekly report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from county.engine import EngineUnavailable
from county.uplinked import instant
from county.weekly import meeting_figures, weekly_csv

if TYPE_CHECKING:
    from county.service import CountyService

log = logging.getLogger("vitalgate.county.http")

BODY_MAX_BYTES = 16 * 1024
BIND_RETRY_S = 2.0
ALERT_STATES = ("active", "all")


def _authorized(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _error(status: int, msg: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": msg, **extra}, status_code=status)


def create_app(service: CountyService) -> Starlette:
    token = service.cfg.http.token if service.cfg.http else ""
    store = service.store

    def guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            if not _authorized(request, token):
                return JSONResponse(
                    {"error": "missing or wrong token (Authorization: Bearer <token>)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)

        return wrapped

    async def clinics(request: Request) -> Response:
        return JSONResponse({"clinics": store.clinics(service.cfg.offline_after_s)})

    async def alerts(request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "active") or "active"
        if state not in ALERT_STATES:
            return _error(400, "state must be active or all")
        rows = store.alerts(
            clinic=q.get("clinic") or None,
            active_only=state == "active",
            patient=q.get("patient") or None,
            limit=_int(q.get("limit"), 500, 1, 5000),
        )
        return JSONResponse({"alerts": rows})

    async def alert(request: Request) -> Response:
        a = store.alert(request.path_params["alert_id"])
        if a is None:
            return _error(404, "no such alert")
        a["history"] = store.alert_history(a["alert_id"])
        return JSONResponse(a)

    async def ack(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _error(400, str(exc))
        by = body.get("by")
        if not isinstance(by, str) or not by.strip() or len(by) > 200:
            return _error(422, "by: who acknowledges, a non-empty string (at most 200 characters)")
        try:
            sent = await service.acknowledge(alert_id, by.strip())
        except EngineUnavailable as exc:
            return _error(503, "the county cluster did not take the acknowledgement; try again", detail=str(exc))
        if sent is None:
            return _error(404, "no such alert")
        return JSONResponse({"sent": True, **sent}, status_code=202)

    async def readings(request: Request) -> Response:
        q = request.query_params
        patient = q.get("patient")
        if not patient:
            return _error(400, "patient is required")
        since = None
        if q.get("since"):
            try:
                since = instant(q["since"])
            except ValueError:
                return _error(400, "since: an ISO 8601 time such as 2026-03-15T00:00:00+08:00")
        rows = store.readings(q.get("clinic") or None, patient, since, limit=_int(q.get("limit"), 10_000, 1, 100_000))
        return JSONResponse({"clinic": q.get("clinic"), "patient": patient, "readings": rows})

    async def weekly(request: Request) -> Response:
        days = _int(request.query_params.get("days"), 7, 1, 366)
        figures = {"days": days, **meeting_figures(store, time.time() - days * 86_400)}
        if request.query_params.get("format") == "csv":
            return Response(
                weekly_csv(service.cfg.county, figures),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="county-weekly-{days}d.csv"'},
            )
        return JSONResponse(figures)

    async def healthz(request: Request) -> Response:
        return JSONResponse(service.health())

    async def page(request: Request) -> Response:
        return HTMLResponse(_packaged("page.html"), headers=PAGE_HEADERS)

    async def page_js(request: Request) -> Response:
        return Response(_packaged("page.js"), media_type="text/javascript", headers=PAGE_HEADERS)

    async def labels(request: Request) -> Response:
        return JSONResponse(zh_labels())

    routes = [
        Route("/api/clinics", guard(clinics)),
        Route("/api/alerts", guard(alerts)),
        Route("/api/alerts/{alert_id}", guard(alert)),
        Route("/api/alerts/{alert_id}/ack", guard(ack), methods=["POST"]),
        Route("/api/readings", guard(readings)),
        Route("/api/weekly", guard(weekly)),
        Route("/healthz", healthz),
        Route("/", page),
        Route("/page.js", page_js),
        Route("/labels.json", labels),
    ]
    return Starlette(routes=routes)


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _packaged(name: str) -> str:
    return resources.files("county").joinpath(name).read_text(encoding="utf-8")


def zh_labels() -> dict[str, str]:
    """The console's zh-CN names of conditions, tiers, severities and states (console/i18n.py)."""
    from console.i18n import t
    from stream.models import AlertState, Condition, Severity, Tier

    keys = (
        [f"cond.{c.value}" for c in Condition]
        + [f"tier.{x.value}" for x in Tier]
        + [f"sev.{x.value}" for x in Severity]
        + [f"state.{x.value}" for x in AlertState]
    )
    return {k: t("zh", k) for k in keys}


def _int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(text))) if text else default
    except ValueError:
        return default


async def _json_body(request: Request) -> dict:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_MAX_BYTES:
            raise ValueError(f"body is over {BODY_MAX_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


async def serve(service: CountyService, bind: str, port: int, stop: asyncio.Event) -> None:
    """uvicorn on the running loop until `stop`; the service owns the signals. A busy port is retried."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        create_app(service), host=bind, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = _Server(config)
    while not stop.is_set():
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind, port))
            break
        except OSError as exc:
            log.error("county HTTP cannot listen on %s:%d, retrying: %s", bind, port, exc)
            try:
                await asyncio.wait_for(stop.wait(), BIND_RETRY_S)
            except TimeoutError:
                pass
    else:
        return
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sock.close()
