"""How the ECG analyser holds up away from the exact dev-set conditions.

    python bench/ecg_generality.py [--records 100,105,...] [--variants native,fs250,...] [--jobs 2]

The held-out records are different recordings; this bench cannot see them, but
it can change what a held-out set is likely to change and re-score the dev
mitdb records beat by beat against their reference annotations: resampled to
125/250/500 Hz, the second lead, inverted, rescaled, and with
the Noise Stress Test Database's muscle and baseline-wander noise added at a
given SNR (the variants are described in ``simulators/ecg_stress.py``).

For each variant it prints pooled beat Se/PPV, AF duration Se/Sp, VT runs
flagged, ``vt`` alarms matching no ventricular run, ``pause``/``asystole``
alarms not at a reference RR interval of 2.5 s or more, and the classifier's
ventricular-beat Se/PPV over matched beats (reference ``V``/``E`` vs detected
``V``), plus the records whose beat Se or PPV falls below 99 %.  Scoring is
``stream.ecg.evaluation``'s, the same as ``vitalgate ecg-eval``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.ecg_stress import variant  # noqa: E402
from stream.ecg import evaluation  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "mitdb"
MITDB = ["100", "105", "119", "200", "201", "203", "207", "208", "210", "221", "222", "232"]
VARIANTS = ["native", "fs125", "fs250", "fs500", "lead2", "inverted", "gain0.4", "gain3", "ma12", "ma6", "bw6"]


def ventricular_confusion(r: evaluation.Record, beats: list[tuple[float, str]]) -> tuple[int, int, int]:
    """(ventricular beat called V, ventricular called N, supraventricular called V) over matched beats.

    Ventricular = ``V`` and ``E`` (escape); fusion beats (``F``) count in neither.
    """
    ref_t, ref_sym = evaluation.reference_beats(r)
    vv = vn = nv = 0
    if not len(ref_t):
        return 0, 0, 0
    for t, cls in beats:
        i = int(np.searchsorted(ref_t, t))
        j = min((k for k in (i - 1, i) if 0 <= k < len(ref_t)), key=lambda k: abs(ref_t[k] - t))
        if abs(ref_t[j] - t) > evaluation.MATCH_S:
            continue
        if ref_sym[j] in ("V", "E"):
            vv += cls == "V"
            vn += cls != "V"
        elif ref_sym[j] != "F":
            nv += cls == "V"
    return vv, vn, nv


def score(args: tuple[str, str]) -> dict:
    rec_name, var = args
    r = variant(evaluation.read_record(str(DATA / rec_name)), var)
    beats, alarms, _ = evaluation.analyse(r)
    out = evaluation.score_record(r, beats, alarms)
    out["v_confusion"] = ventricular_confusion(r, beats)
    ref_t, _ = evaluation.reference_beats(r)
    long_rr = [(a, b) for a, b in zip(ref_t[:-1], ref_t[1:]) if b - a >= 2.5]
    out["false_pause"] = sum(
        1
        for a in alarms
        if a["condition"] in ("pause", "asystole")
        and not any(a["start_s"] <= y + 1.0 and a["end_s"] >= x - 1.0 for x, y in long_rr)
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default=",".join(MITDB), help="comma-separated mitdb record names")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one record each)")
    a = ap.parse_args()
    records = a.records.split(",")
    variants = a.variants.split(",")
    print(
        f"{'variant':<9} {'Se%':>7} {'PPV%':>7} {'AFse%':>7} {'AFsp%':>7} {'VT':>7} {'falseVT':>7} "
        f"{'Vse%':>6} {'Vppv%':>6} {'falseP':>6}  records below 99 % Se or PPV"
    )
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for var in variants:
            results = list(pool.map(score, [(rn, var) for rn in records]))
            t = evaluation.pooled(results)
            b, af, vt = t["beats"], t["af"], t["vt"]
            weak = [
                f"{r['record']}({100 * (r['beats']['se'] or 0):.1f}/{100 * (r['beats']['ppv'] or 0):.1f})"
                for r in results
                if (r["beats"]["se"] or 0) < 0.99 or (r["beats"]["ppv"] or 0) < 0.99
            ]
            vv = sum(r["v_confusion"][0] for r in results)
            vn = sum(r["v_confusion"][1] for r in results)
            nv = sum(r["v_confusion"][2] for r in results)
            print(
                f"{var:<9} {evaluation._fmt(b['se']):>7} {evaluation._fmt(b['ppv']):>7} "
                f"{evaluation._fmt(af['se']):>7} {evaluation._fmt(af['sp']):>7} "
                f"{vt['flagged']:>3}/{vt['ref_runs']:<3} {vt['vt_alarms_unmatched']:>7} "
                f"{100 * vv / max(1, vv + vn):6.2f} {100 * vv / max(1, vv + nv):6.2f} "
                f"{sum(r['false_pause'] for r in results):>6}  {' '.join(weak) or '-'}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
