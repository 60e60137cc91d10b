"""The doctor's console in-process on a seeded clinic, with people's accounts, and signing in to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp

from box.app import Gateway
from box.config import ConsoleAccount, GatewayConfig
from dispatch.http_api import ApiServer
from simulators.stack import free_port
from tests.support.clinic import NOW, clinic_config, seed_clinic

# The clinic's people (console/accounts.py): name -> (role, password). Hashed once per test run.
PEOPLE = {
    "李医生": ("doctor", "li-zhen-2026-qiao"),
    "王医生": ("doctor", "wang-fang-hong-77"),
    "county-zhao": ("reader", "zhao-reads-the-county-9"),
    "tech-chen": ("technician", "chen-fixes-cuffs-42"),
}


_HASHED: list[ConsoleAccount] = []  # scrypt is slow: hash the people once per run


def people_accounts() -> list[ConsoleAccount]:
    from console.accounts import hash_password

    if not _HASHED:
        _HASHED.extend(
            ConsoleAccount(name=n, role=role, password_hash=hash_password(pw))  # type: ignore[arg-type]
            for n, (role, pw) in PEOPLE.items()
        )
    return list(_HASHED)


def with_accounts(cfg: GatewayConfig) -> GatewayConfig:
    assert cfg.http is not None
    return cfg.model_copy(update={"http": cfg.http.model_copy(update={"accounts": people_accounts()})})


@contextlib.asynccontextmanager
async def console(tmp_path, accounts: bool = True) -> AsyncIterator[tuple[Gateway, str, dict]]:
    """The gateway's HTTP app on a free port; ``accounts=False``: a config without people's accounts."""
    storage = tmp_path / "var"
    ids = seed_clinic(storage)
    port = free_port()
    cfg = clinic_config(storage, http_port=port)
    gw = Gateway(with_accounts(cfg) if accounts else cfg, clock=lambda: NOW + timedelta(seconds=1))
    stop = asyncio.Event()
    server = ApiServer(gw.http_app, "127.0.0.1", port)
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.started.wait(), 10)
    try:
        yield gw, f"http://127.0.0.1:{port}", ids
    finally:
        gw.stop_event.set()  # ends live streams, as the gateway's shutdown does
        stop.set()
        await asyncio.wait_for(task, 10)
        gw.http_app.state.console.close()
        gw.store.close()
        gw.alerts.close()


async def login(session: aiohttp.ClientSession, base: str, name: str = "李医生", password: str | None = None) -> str:
    """Sign in (as one of PEOPLE unless a password is given); returns where the console sends them."""
    password = PEOPLE[name][1] if password is None else password
    async with session.post(
        f"{base}/login", data={"password": password, "name": name, "next": "/"}, allow_redirects=False
    ) as r:
        assert r.status == 303, (r.status, await r.text())
        return r.headers["Location"]


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
