"""The `vitalgate` command line (docs/spec/public-surface.md): demo, run, check-config, simulate, ecg-eval,
ecg-screen, broker-config, passwd;
routes test, alerts report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from box import logs

if TYPE_CHECKING:
    from box.config import GatewayConfig


def _load_config(path: str | None) -> GatewayConfig | None:
    """The config at `path` (problems printed, then None), or the built-in defaults when there is no path."""
    from box.config import GatewayConfig, load_or_report

    return GatewayConfig(clinic="default") if path is None else load_or_report(path)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from box.config import load_or_report

    cfg = load_or_report(args.path, stream=sys.stdout)
    if cfg is None:
        return 2
    n_dev = sum(len(p.devices) for p in cfg.patients)
    print(f"{args.path}: OK (clinic {cfg.clinic}, {len(cfg.patients)} patients, {n_dev} devices)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from box.app import Gateway
    from box.config import load_or_report

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    logs.setup(args.log_level)
    return asyncio.run(Gateway(cfg).run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from box.demo import run_demo

    logs.setup("WARNING")
    if args.county:
        if args.ble:
            print("demo: --county and --ble are separate demos; choose one", file=sys.stderr)
            return 2
        from box.county_demo import run_county_demo

        return asyncio.run(run_county_demo(args.duration, args.patients, args.seed))
    return asyncio.run(run_demo(args.duration, args.patients, args.seed, ble=args.ble))


def _cmd_ble_devices(args: argparse.Namespace) -> int:
    from box.ble_devices import run

    return run(args)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.simulate import simulate

    logs.setup("INFO")
    return asyncio.run(simulate(args.broker, args.clinic, args.scenario, args.expect, stack=args.stack))


def _cmd_broker_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from box.broker_config import write
    from box.config import load_or_report

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    try:
        accounts, generated, cred = write(cfg, Path(args.out), user=args.user)
    except (ValueError, OSError) as exc:
        print(f"broker-config: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    print(
        f"wrote {out / 'mosquitto.conf'}, {out / 'passwd'} (hashed) and {out / 'acl'} for "
        f"{len(accounts)} accounts: " + ", ".join(f"{a.name} ({a.role})" for a in accounts)
    )
    if generated:
        print(f"generated passwords for {', '.join(generated)}: written to {cred} (mode 0600)")
    else:
        print(f"no new passwords; all are in {cred} (mode 0600)")
    if args.show:
        print(cred.read_text(), end="")
    print(f"start the broker with: mosquitto -c {out / 'mosquitto.conf'}")
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    """A console account's line for `http.accounts`: the password asked twice (or one line on stdin), hashed."""
    import getpass

    from console.accounts import ROLES, config_line, hash_password, name_problem, password_problem

    problem = name_problem(args.name)
    if problem:
        print(f"passwd: name {args.name!r}: {problem}", file=sys.stderr)
        return 2
    if args.role not in ROLES:  # argparse's choices already say so; kept for callers of main()
        print(f"passwd: role must be one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"password for {args.name}: ")
            again = getpass.getpass("the same again: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 2
        if password != again:
            print("passwd: the two passwords differ; nothing written", file=sys.stderr)
            return 2
    problem = password_problem(password)
    if problem:
        print(f"passwd: password {problem}", file=sys.stderr)
        return 2
    print(
        f"# paste under http.accounts: in the gateway config, then restart vitalgate ({args.role} {args.name})",
        file=sys.stderr,
    )
    print(config_line(args.name, args.role, hash_password(password)))
    return 0


def _cmd_ecg_eval(argv: list[str]) -> int:
    try:
        from stream.ecg.evaluation import main as ecg_main
    except ImportError as exc:
        print(f"ecg-eval is not available in this build: {exc}", file=sys.stderr)
        return 2
    return ecg_main(argv)


def _cmd_ecg_screen(argv: list[str]) -> int:
    from stream.ecg.screening_command import main as screen_main

    return screen_main(argv)


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's), as a technician quotes it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitalgate")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    from stream.extras import MissingExtra

    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except MissingExtra as exc:  # a command of the developers' tools on a box without their extra
        print(f"vitalgate: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    if argv[:1] == ["ecg-eval"]:
        return _cmd_ecg_eval(argv[1:])
    if argv[:1] == ["ecg-screen"]:
        return _cmd_ecg_screen(argv[1:])
    ap = argparse.ArgumentParser(prog="vitalgate", description="Edge gateway for home wearable monitoring")
    ap.add_argument("--version", action="version", version=f"vitalgate {installed_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="embedded broker + simulated patients + the whole pipeline")
    d.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    d.add_argument("--patients", type=int, default=8)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--ble", action="store_true", help="also BLE patients, through bleak and a mock BlueZ (docs/ble.md)")
    d.add_argument(
        "--county",
        action="store_true",
        help="two clinics and the county centre on a 3-node NATS cluster (needs .[county]; docs/county.md)",
    )
    d.set_defaults(fn=_cmd_demo)
    r = sub.add_parser("run", help="run the gateway as configured")
    r.add_argument("--config", required=True)
    r.add_argument("--log-level", default="INFO")
    r.set_defaults(fn=_cmd_run)
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("path")
    c.set_defaults(fn=_cmd_check_config)
    s = sub.add_parser("simulate", help="drive device simulators against a broker from a scenario file")
    s.add_argument("--broker", default=None, help="HOST:PORT of the broker your gateway uses")
    s.add_argument(
        "--stack",
        action="store_true",
        help="start Mosquitto (clinic + county) and `vitalgate run` from the scenario; needed for "
        "infrastructure events (uplink down, broker restart, gateway kill)",
    )
    s.add_argument("--clinic", default=None)
    s.add_argument("--scenario", required=True)
    s.add_argument("--expect", action="store_true", help="check the scenario's expected alerts; exit 1 on a difference")
    s.set_defaults(fn=_cmd_simulate)
    from box.ble_devices import add_arguments as ble_device_arguments

    bd = sub.add_parser(
        "ble-devices", help="virtual BLE devices for a config's `ble:` devices on a private D-Bus (no hardware)"
    )
    ble_device_arguments(bd)
    bd.set_defaults(fn=_cmd_ble_devices)
    sub.add_parser(
        "ecg-eval", help="score the streaming ECG analyser on WFDB records (see docs/spec/public-surface.md)"
    )
    sub.add_parser("ecg-screen", help="classify short ECG strips: normal, af, other or noisy (AF screening)")
    b = sub.add_parser("broker-config", help="write a clinic Mosquitto config that admits only the box's parties")
    b.add_argument("--config", required=True)
    b.add_argument("--out", required=True, help="directory for mosquitto.conf, passwd, acl, credentials.txt")
    b.add_argument("--user", default="mosquitto", help="the user Mosquitto runs as (default mosquitto)")
    b.add_argument("--show", action="store_true", help="also print the credentials in clear")
    b.set_defaults(fn=_cmd_broker_config)
    pw = sub.add_parser("passwd", help="a console account's password hash, as a line for http.accounts")
    pw.add_argument("name", help="the account's name (it signs the audit trail)")
    pw.add_argument(
        "--role",
        default="doctor",
        choices=["doctor", "technician", "reader"],
        help="doctor: see and act (default); reader: see only; technician: devices and metrics",
    )
    pw.add_argument("--stdin", action="store_true", help="read the password from one line of stdin (no prompt)")
    pw.set_defaults(fn=_cmd_passwd)
    from dispatch.cli import add_dispatch_commands

    add_dispatch_commands(sub, _load_config)  # routes test
    from console.commands import add_record_commands

    add_record_commands(sub, _load_config)  # alerts report, report, export fhir
    from county.cli import add_county_commands

    add_county_commands(sub)  # county, county-engine (the county centre; its own config)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
