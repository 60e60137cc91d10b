"""`vitalgate report`, `vitalgate export fhir` and `vitalgate alerts report`: the clinic's storage, read for people.

- `vitalgate report --patient P [--period 7d] [--config PATH] [--out DIR] [--lang zh|en]`
  writes `report-P-YYYYMMDD.html` and `.pdf` (console/patient_report.py) and prints their paths.
- `vitalgate export fhir --patient P --since T [--until T] [--config PATH] [--out FILE] [--ecg strips|frames|none]`
  writes a FHIR R4 Bundle (console/fhir_export.py), validated, to FILE or stdout.
- `vitalgate alerts report [--config PATH] [--since 7d] [--json]`: the alarm-fatigue report
  (console/alarm_report.py); without --config, the built-in defaults (storage in ./var).

All three read the storage named by the config (`storage.path`) read-only: safe
while the gateway runs. Exit codes: 0 done, 2 bad config, unknown patient or
bad argument, 1 if the export fails validation (a bug: please report it).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol


class _Patient(Protocol):
    @property
    def id(self) -> str: ...


class _Storage(Protocol):
    @property
    def path(self) -> Path: ...


class RecordsConfig(Protocol):
    """What these commands read of the gateway config."""

    @property
    def clinic(self) -> str: ...
    @property
    def patients(self) -> Sequence[_Patient]: ...
    @property
    def storage(self) -> _Storage: ...


# The command line's config loader (box/cli.py): the file at PATH, or the built-in defaults for None;
# None when the file has problems (they are printed).
LoadConfig = Callable[[str | None], RecordsConfig | None]

DEFAULT_CONFIG = "/etc/vitalgate/gateway.yaml"


def _patient_ok(cfg: RecordsConfig, patient: str) -> bool:
    if any(p.id == patient for p in cfg.patients):
        return True
    print(
        f"patient {patient!r} is not in the config (patients: {', '.join(p.id for p in cfg.patients) or 'none'})",
        file=sys.stderr,
    )
    return False


def _duration(text: str, option: str) -> timedelta | None:
    """`text` as a duration, or None once what is wrong with `option` is printed."""
    from stream.models import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        print(f"{option}: {exc}", file=sys.stderr)
        return None


def cmd_report(args: argparse.Namespace, load: LoadConfig) -> int:
    from console.patient_report import write_report
    from stream.models import now_local

    cfg = load(args.config)
    if cfg is None or not _patient_ok(cfg, args.patient):
        return 2
    period = _duration(args.period, "--period")
    if period is None:
        return 2
    html_path, pdf_path = write_report(
        cfg.storage.path, cfg.clinic, args.patient, period, now_local(), Path(args.out), lang=args.lang
    )
    print(html_path)
    print(pdf_path)
    return 0


def cmd_export_fhir(args: argparse.Namespace, load: LoadConfig) -> int:
    from pydantic import ValidationError

    from console.fhir_export import build_bundle, parse_since, validate
    from stream.models import now_local

    cfg = load(args.config)
    if cfg is None or not _patient_ok(cfg, args.patient):
        return 2
    now = now_local()
    try:
        since = parse_since(args.since, now)
        until = parse_since(args.until, now) if args.until else None
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    bundle = build_bundle(cfg.storage.path, cfg.clinic, args.patient, since, until, ecg=args.ecg, now=now)
    try:
        validate(bundle)
    except ValidationError as exc:
        print(f"the bundle does not validate as FHIR R4 (a bug, please report it):\n{exc}", file=sys.stderr)
        return 1
    text = json.dumps(bundle, ensure_ascii=False, indent=1 if args.out else None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"{args.out}: {len(bundle['entry'])} observations", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_alerts_report(args: argparse.Namespace, load: LoadConfig) -> int:
    from datetime import datetime

    from console.alarm_report import build_report, format_report
    from stream.models import CHINA_TZ

    cfg = load(args.config)
    if cfg is None:
        return 2
    db = Path(cfg.storage.path) / "alerts.db"
    if not db.exists():
        print(f"no alert store at {db} (is storage.path right?)", file=sys.stderr)
        return 2
    since = _duration(args.since, "--since")
    if since is None:
        return 2
    report = build_report(db, since, datetime.now(CHINA_TZ))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(format_report(report, cfg.clinic))
    return 0


def add_record_commands(sub: argparse._SubParsersAction, load: LoadConfig) -> None:
    alerts = sub.add_parser("alerts", help="alert tools")
    asub = alerts.add_subparsers(dest="alerts_cmd", required=True)
    a = asub.add_parser("report", help="alarm-fatigue report from the alert store's audit trail")
    a.add_argument("--config", default=None, help="gateway config (for storage.path; default ./var)")
    a.add_argument("--since", default="7d", help="period, e.g. 24h, 7d (default 7d)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=functools.partial(cmd_alerts_report, load=load))
    r = sub.add_parser("report", help="a patient's health report, HTML and PDF")
    r.add_argument("--patient", required=True)
    r.add_argument("--period", default="7d", help="how far back from now (default 7d)")
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--out", default=".", help="directory for report-<patient>-<date>.html/.pdf (default .)")
    r.add_argument("--lang", choices=("zh", "en"), default="zh")
    r.set_defaults(fn=functools.partial(cmd_report, load=load))
    e = sub.add_parser("export", help="export data in a standard shape")
    esub = e.add_subparsers(dest="what", required=True)
    f = esub.add_parser("fhir", help="FHIR R4 Bundle of a patient's observations")
    f.add_argument("--patient", required=True)
    f.add_argument("--since", required=True, help="a duration back from now (7d) or a date/time (2026-11-01)")
    f.add_argument("--until", default=None)
    f.add_argument("--config", default=DEFAULT_CONFIG)
    f.add_argument("--out", default=None, help="file to write (default: stdout)")
    f.add_argument(
        "--ecg",
        choices=("strips", "frames", "none"),
        default="strips",
        help="ECG: alert evidence strips (default), every stored frame as 1-min chunks, or none",
    )
    f.set_defaults(fn=functools.partial(cmd_export_fhir, load=load))
