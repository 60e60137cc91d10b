"""The county's two commands, added to the `vitalgate` parser by `add_county_commands(sub)`:

* `vitalgate county --config PATH [--http-port N]` -- the county centre's service (county/service.py);
* `vitalgate county-engine --config PATH --out DIR` -- the NATS server configs and the clinics'
  `uplink:` sections (county/engine_config.py).

Both exit 2 on a bad config, after printing every problem as `PATH:LINE: field: what is wrong`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _cmd_county(args: argparse.Namespace) -> int:
    from county.config import load_or_report

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        print(f"--http-port {args.http_port}: a port from 0 (no HTTP) to 65535", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # reconnect chatter while a server is down
    from county.service import run_county

    return run_county(cfg, args.http_port)


def _cmd_county_engine(args: argparse.Namespace) -> int:
    from county.config import load_or_report
    from county.engine_config import write

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    try:
        written = write(cfg, Path(args.out))
    except (ValueError, OSError) as exc:
        print(f"county-engine: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    out = Path(args.out)
    print(
        "start each server with: "
        + "; ".join(f"nats-server -c {out / f'nats-{k + 1}.conf'}" for k in range(len(cfg.engine.nats)))
    )
    return 0


def add_county_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "county", help="the county monitoring centre: consume what clinics uplink, serve its page and API"
    )
    c.add_argument("--config", required=True)
    c.add_argument(
        "--http-port", type=int, default=None, help="serve the page and API on this port instead of http.port (0: none)"
    )
    c.add_argument("--log-level", default="INFO")
    c.set_defaults(fn=_cmd_county)
    e = sub.add_parser("county-engine", help="write the county's NATS server configs and the clinics' uplink sections")
    e.add_argument("--config", required=True)
    e.add_argument("--out", required=True, help="directory for nats-K.conf, uplink-K.yaml and the JetStream storage")
    e.set_defaults(fn=_cmd_county_engine)


def main(argv: list[str] | None = None) -> int:
    """`python -m county.cli county ...` works before the hook in the main CLI exists."""
    ap = argparse.ArgumentParser(prog="vitalgate")
    add_county_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
