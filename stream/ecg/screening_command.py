"""`vitalgate ecg-screen PATH... [--json]`: classify short strips (docs/spec/public-surface.md).

One line per strip and a table of labels; with a CinC 2017 ``REFERENCE.csv`` beside the
strips, also the F1 per class and the CinC 2017 score (mean F1 of N, A and O).  Exit 0
(an unreadable *signal* is ``noisy``), 2 when a file cannot be read at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from stream.ecg.evaluation import RecordError, read_record
from stream.ecg.screening import LABELS, MODEL_NAME, REFERENCE_CODES, load_model, screen

SKIP = ("ALARMS", "REFERENCE.csv", "REFERENCE", "SHA256SUMS", "RECORDS", "README.md", "README")


def record_paths(args: list[str]) -> list[str]:
    """Record paths without extension, each once, in the order given."""
    out: list[str] = []
    for p in args:
        base, ext = os.path.splitext(p)
        q = base if ext in (".hea", ".mat", ".dat", ".atr") else p
        if os.path.basename(q) in SKIP or os.path.basename(p) in SKIP:
            continue
        if q not in out:
            out.append(q)
    return out


def references(paths: list[str]) -> dict[str, str]:
    """``{record path: label}`` from the REFERENCE.csv beside each strip (CinC 2017 codes)."""
    out: dict[str, str] = {}
    for folder in {os.path.dirname(p) or "." for p in paths}:
        ref = Path(folder) / "REFERENCE.csv"
        if not ref.exists():
            continue
        codes = {}
        for line in ref.read_text().splitlines():
            parts = [s.strip() for s in line.split(",")]
            if len(parts) >= 2 and parts[1] in REFERENCE_CODES:
                codes[parts[0]] = REFERENCE_CODES[parts[1]]
        for p in paths:
            if (os.path.dirname(p) or ".") == folder and os.path.basename(p) in codes:
                out[p] = codes[os.path.basename(p)]
    return out


def cinc2017_score(pairs: list[tuple[str, str]]) -> dict:
    """F1 per label and the CinC 2017 score over (reference, called) pairs."""
    f1 = {}
    for label in LABELS:
        both = sum(1 for r, c in pairs if r == label and c == label)
        denom = sum(1 for r, _ in pairs if r == label) + sum(1 for _, c in pairs if c == label)
        f1[label] = round(2.0 * both / denom, 4) if denom else None
    known = [f1[k] for k in ("normal", "af", "other")]
    score = round(sum(v for v in known if v is not None) / 3.0, 4)
    confusion = {r: {c: sum(1 for a, b in pairs if a == r and b == c) for c in LABELS} for r in LABELS}
    return {"strips": len(pairs), "f1": f1, "cinc2017": score, "confusion": confusion}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="vitalgate ecg-screen", description="Classify short single-lead ECG strips: normal, af, other or noisy."
    )
    ap.add_argument("records", nargs="+", metavar="PATH", help="WFDB record path (.hea/.mat given or not)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    paths = record_paths(args.records)
    if not paths:
        print("ecg-screen: no records given", file=sys.stderr)
        return 2
    model = load_model()
    strips: list[dict[str, Any]] = []
    seconds = spent = 0.0
    for i, p in enumerate(paths, 1):
        try:
            rec = read_record(p)
        except RecordError as exc:
            print(
                f"ecg-screen: cannot read {p}: {exc} (give a WFDB record path: NAME.hea with its .dat/.mat)",
                file=sys.stderr,
            )
            return 2
        t0 = time.perf_counter()
        res = screen(rec.signal_uv, rec.fs, model)
        spent += time.perf_counter() - t0
        seconds += res.seconds
        strips.append(
            {
                "record": rec.name,
                "label": res.label,
                "seconds": round(res.seconds, 1),
                "hr_bpm": res.hr_bpm,
                "confidence": round(res.confidence, 3),
                "probabilities": res.probabilities,
                "path": p,
            }
        )
        if len(paths) >= 50 and (i % 200 == 0 or i == len(paths)):
            print(f"ecg-screen: [{i}/{len(paths)}] strips classified", file=sys.stderr)
    ref = references(paths)
    score = cinc2017_score([(ref[s["path"]], s["label"]) for s in strips if s["path"] in ref]) if ref else None
    factor = round(seconds / spent, 1) if spent > 0 else None
    for s in strips:
        s.pop("path")
    if args.json:
        out: dict = {"strips": strips, "realtime_factor": factor, "model": MODEL_NAME}
        if score is not None:
            out["score"] = score
        print(json.dumps(out))
        return 0
    for s in strips:
        hr = f"{s['hr_bpm']:>4} bpm" if s["hr_bpm"] is not None else "   - bpm"
        print(f"{s['record']:<16} {s['label']:<7} {s['seconds']:6.1f} s  {hr}  confidence {s['confidence']:.2f}")
    print()
    print("label     strips")
    for label in LABELS:
        print(f"{label:<8} {sum(1 for s in strips if s['label'] == label):7d}")
    print(f"{'total':<8} {len(strips):7d}   ({factor}x real time, model {MODEL_NAME})")
    if score is not None:
        print()
        print(f"against REFERENCE.csv ({score['strips']} strips); rows: reference, columns: called")
        print("          " + " ".join(f"{c:>7}" for c in LABELS))
        for r in LABELS:
            print(f"{r:<9} " + " ".join(f"{score['confusion'][r][c]:7d}" for c in LABELS))
        print("F1: " + "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in score["f1"].items()))
        print(f"CinC 2017 score (mean F1 of normal, af, other): {score['cinc2017']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
