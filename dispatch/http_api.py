"""A small authenticated HTTP API for the dispatcher, served inside the gateway's event loop.

`create_app(dispatcher, token)` returns a Starlette app; everything under
`/api` needs `Authorization: Bearer <token>` (the clinic's token from the
config's `http:` key). Other parts of the gateway (the village doctor's page)
add their own routes to the same app: `app.router.routes.append(Route(...))`
or `app.mount("/doctor", ...)`, and can protect them with `require_token`.

Endpoints (JSON in, JSON out):
- `GET  /api/alerts?state=active|firing|acknowledged|resolved|all&patient_id=P&limit=N`
- `GET  /api/alerts/{id}`                 the alert, its bookkeeping and its audit trail
- `POST /api/alerts/{id}/ack`             `{"by": "dr-li"}`
- `POST /api/alerts/{id}/snooze`          `{"by": "dr-li", "duration": "30m", "why": "..."}`
- `GET  /api/silences?active=true`
- `POST /api/silences`                    `{"match": {...}, "duration": "2h" | "ends_at": "...", "by": "...", "why": "..."}`
- `POST /api/silences/{id}/expire`        `{"by": "..."}`  (also `DELETE /api/silences/{id}?by=...`)
- `GET  /api/deliveries?channel=NAME`     channel delivery receipts
- `GET  /api/status`                      dispatcher counters, holds, channel health

`ApiServer` runs uvicorn on the running loop without touching signal handling
(the gateway owns SIGTERM/SIGINT and stops the server in its shutdown order).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatch.control import HttpConfig, SnoozeRequest  # noqa: F401  (HttpConfig re-exported)
from dispatch.dispatcher import Dispatcher
from dispatch.request_body import API_MAX_BYTES, BodyTooLarge, json_object, read_capped
from dispatch.suppression import SilenceSpec
from stream.models import AlertState

log = logging.getLogger("vitalgate.http")

RETRY_BIND_S = 5.0


def _authorized(headers: Mapping[str, str], token: str) -> bool:
    got = headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def require_token(request: Request) -> JSONResponse | None:
    """For routes added outside /api: None if the request carries the clinic token, else a 401 response."""
    if _authorized(request.headers, request.app.state.token):
        return None
    return _unauthorized()


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or wrong token (Authorization: Bearer <token>)"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class BearerAuth:
    """Pure ASGI middleware: every request below its mount needs the clinic token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not _authorized(headers, self.token):
                await _unauthorized()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status)


async def _json(request: Request) -> dict:
    return json_object(await read_capped(request, API_MAX_BYTES))


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return _error(413, str(exc))


def _validation(exc: ValidationError) -> JSONResponse:
    return JSONResponse(
        {
            "error": "invalid request",
            "problems": [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()],
        },
        status_code=422,
    )


class ByRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1, max_length=200)


_STATES = {"active": [AlertState.FIRING, AlertState.ACKNOWLEDGED], "all": None, **{s.value: [s] for s in AlertState}}


def create_app(dispatcher: Dispatcher, token: str) -> Starlette:
    d = dispatcher

    async def list_alerts(request: Request) -> JSONResponse:
        state = request.query_params.get("state", "active")
        if state not in _STATES:
            return _error(400, f"state must be one of {', '.join(_STATES)}")
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "200"))))
        except ValueError:
            return _error(400, "limit must be a number")
        rows = d.store.list_alerts(_STATES[state], request.query_params.get("patient_id"), limit)
        return JSONResponse({"alerts": [s.to_api() for s in rows]})

    async def get_alert(request: Request) -> JSONResponse:
        aid = request.path_params["alert_id"]
        s = d.store.get(aid)
        if s is None:
            found = d.store.channel_alert(aid)
            if found is None:
                return _error(404, f"no alert {aid}")
            return JSONResponse({"alert": found[1].to_public(), "transitions": []})
        return JSONResponse({"alert": s.to_api(), "transitions": d.store.transitions(aid)})

    async def ack(request: Request) -> JSONResponse:
        aid = request.path_params["alert_id"]
        try:
            req = ByRequest.model_validate(await _json(request))
        except ValidationError as exc:
            return _validation(exc)
        except ValueError as exc:
            return _error(400, str(exc))
        s = d.store.get(aid)
        if s is None:
            tech = await d.acknowledge_technical(aid, req.by)
            if tech is not None:
                return JSONResponse({"alert": tech.to_public()})
            return (
                _error(404, f"no alert {aid}")
                if d.store.channel_alert(aid) is None
                else _error(409, "already acknowledged or resolved")
            )
        alert = await d.acknowledge(aid, req.by)
        if alert is None:
            return _error(409, f"alert is {s.alert.state.value}, not firing")
        return JSONResponse({"alert": d.store.get(aid).to_api()})  # type: ignore[union-attr]

    async def snooze(request: Request) -> JSONResponse:
        aid = request.path_params["alert_id"]
        try:
            body = await _json(request)
            req = SnoozeRequest.model_validate({**body, "alert_id": aid})
        except ValidationError as exc:
            return _validation(exc)
        except ValueError as exc:
            return _error(400, str(exc))
        s = d.store.get(aid)
        if s is None:
            return _error(404, f"no alert {aid}")
        alert = await d.snooze(aid, req.by, req.duration, req.why)
        if alert is None:
            return _error(409, f"alert is {s.alert.state.value}; only a firing alert can be snoozed")
        return JSONResponse({"alert": d.store.get(aid).to_api()})  # type: ignore[union-attr]

    async def list_silences(request: Request) -> JSONResponse:
        active = request.query_params.get("active", "false").lower() in ("1", "true", "yes")
        return JSONResponse({"silences": [s.to_public() for s in d.silences(active_only=active)]})

    async def create_silence(request: Request) -> JSONResponse:
        try:
            spec = SilenceSpec.model_validate(await _json(request))
            sil = await d.add_silence(spec, source="http")
        except ValidationError as exc:
            return _validation(exc)
        except ValueError as exc:
            return _error(400, str(exc))
        return JSONResponse({"silence": sil.to_public()}, status_code=201)

    async def expire_silence(request: Request) -> JSONResponse:
        sid = request.path_params["silence_id"]
        if request.method == "DELETE":
            by = request.query_params.get("by", "")
        else:
            try:
                by = ByRequest.model_validate(await _json(request)).by
            except ValidationError as exc:
                return _validation(exc)
            except ValueError as exc:
                return _error(400, str(exc))
        if not by:
            return _error(422, "say who ends the silence: by")
        sil = await d.expire_silence(sid, by)
        if sil is None:
            return _error(404, f"no silence {sid}")
        return JSONResponse({"silence": sil.to_public()})

    async def deliveries(request: Request) -> JSONResponse:
        return JSONResponse({"deliveries": d.store.deliveries(request.query_params.get("channel"))})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse({"clinic": d.clinic, "counters": d.counters, **d.status()})

    api = [
        Route("/alerts", list_alerts, methods=["GET"]),
        Route("/alerts/{alert_id}", get_alert, methods=["GET"]),
        Route("/alerts/{alert_id}/ack", ack, methods=["POST"]),
        Route("/alerts/{alert_id}/snooze", snooze, methods=["POST"]),
        Route("/silences", list_silences, methods=["GET"]),
        Route("/silences", create_silence, methods=["POST"]),
        Route("/silences/{silence_id}/expire", expire_silence, methods=["POST"]),
        Route("/silences/{silence_id}", expire_silence, methods=["DELETE"]),
        Route("/deliveries", deliveries, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
    ]
    app = Starlette(
        routes=[Mount("/api", routes=api, middleware=[Middleware(BearerAuth, token=token)])],
        exception_handlers={BodyTooLarge: _too_large},
    )
    app.state.dispatcher = dispatcher
    app.state.token = token
    return app


class ApiServer:
    """uvicorn on the running event loop; `run(stop)` until stop is set. A port in use is retried, never fatal:
    alerts keep flowing over MQTT while the API waits for its port."""

    def __init__(self, app: Starlette, bind: str, port: int, tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate, key) PEM files: serve HTTPS."""
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the gateway owns the signals
                yield

            def install_signal_handlers(self) -> None:  # the same, for uvicorn < 0.29
                return None

        self._config = uvicorn.Config(
            app,
            host=bind,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self._server = _Server(self._config)
        self.bind, self.port = bind, port
        self.started = asyncio.Event()

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.bind, self.port))
        sock.set_inheritable(True)
        return sock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sock = self._socket()
                break
            except OSError as exc:
                log.error("HTTP API cannot listen, retrying: %s", exc, extra={"bind": f"{self.bind}:{self.port}"})
                try:
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_BIND_S)
                except TimeoutError:
                    pass
        else:
            return
        serve = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-api")
        while not self._server.started and not serve.done():
            await asyncio.sleep(0.02)
        self.started.set()
        log.info("HTTP API listening", extra={"bind": f"{self.bind}:{self.port}"})
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self._server.should_exit = True
        stopper.cancel()
        await asyncio.gather(serve, return_exceptions=True)
        sock.close()
