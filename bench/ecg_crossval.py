"""The ECG analyser scored only on records it was not tuned on (the splits of ``stream/ecg/folds.py``).

    python bench/ecg_crossval.py [--sets mitdb,vfdb,c2015,noise] [--jobs 2] [--json PATH] [--rules-only]

* ``mitdb``: the 41 MIT-BIH records in four folds by record.  Fold *k* is analysed with
  ``beat_model.load_fold(k)``, the beat model trained without fold *k*.  Per fold and over
  all 41: beats Se/+P; the AAMI ventricular class (reference ``V``/``E``; a missed V beat is
  a false negative; fusion in neither) gross and as the mean of per-record Se and +P; ``(VT`` episodes and runs
  of >= 3 ``V`` flagged; sustained runs (>= 30 s) given a ``vt_sustained`` alarm starting
  within 35 s of their start; false ``vt`` alarms and their rate per 24 h over the records with
  no reference ventricular run; VF/VFL episodes flagged; AF duration Se/Sp.  The same pooled
  figures for non-paced and paced records (``folds.PACED``, each paced record's AF Sp too), and
  for the records outside ``folds.RULES_DEV`` and ``folds.LOOKED_AT`` ("untouched") apart from
  those inside: the hand-set rhythm rules were tuned on the first and rules were chosen by looking
  at the second, so theirs are training figures.
* ``vfdb``: halves A/B (rhythm annotations only): ``(VT`` and VF episodes flagged, AF Sp,
  false ``vt`` alarms, sustained runs.  No beat model was trained on it: the shipped model.
* ``c2015``: the 2015 challenge's ventricular-tachycardia alarms (``v*`` records), halves by
  record-number parity: alarm reproduced (true alarm) or suppressed (false) judged on the 16 s
  before 5:00, and the challenge score 100(TP+TN)/(TP+TN+FP+5FN), with and without the
  first-wave records the rules were developed on.
* ``motion``: all 41 MIT-BIH records with that electrode-motion noise at 6 dB (each with its fold's
  models): the false ``vt`` alarms (none of a reference ventricular run within 1 s), split by the
  noisy segments the VT rules' noise constant was chosen on (``MOTION_LEARNT``) and the others
  (the same recording at other times), and AF Sp.
* ``noise``: MIT-BIH 118 and 119 (the records nstdb is built from) with nstdb's electrode-motion,
  muscle and baseline-wander noise at 6 dB on nst's schedule and SNR definition
  (``simulators/ecg_stress.py``; the electrode motion is recovered from nstdb's 118e24), each
  with its own fold's model.

Scoring is ``stream.ecg.evaluation``'s (the same as ``vitalgate ecg-eval``); the realtime
factor is recorded seconds over analysis seconds, summed over every record analysed.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import doc_block  # noqa: E402

from simulators.ecg_stress import noise_segment, variant  # noqa: E402
from stream.ecg import beat_model, evaluation, folds, vt_window  # noqa: E402
from stream.ecg.beat_model import BeatModel  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg"
SETS = ("mitdb", "vfdb", "c2015", "noise", "motion")
DIRS = {"mitdb": "mitdb", "vfdb": "vfdb", "c2015": "challenge2015", "noise": "mitdb", "motion": "mitdb"}
# electrode-motion segments (0 = the first noisy one) the VT noise rule was chosen on; the others test it
MOTION_LEARNT = (0, 2, 4, 6)
NOISE_RECORDS = ("118", "119")
SUSTAINED_S = 30.0  # a run this long is sustained VT ...
SUSTAINED_ALARM_S = 35.0  # ... and wants a vt_sustained alarm starting this soon after its start
TOL_S = 1.0  # alarm/episode overlap tolerance, as evaluation's runs
Task = tuple[str, str, int | None, str, bool, bool]  # (set, record, MIT-BIH fold or None, variant, rules only,
# the window VT model too)

_models: dict[int, tuple[BeatModel | None | str, str]] = {}


def fold_model(k: int | None, rules_only: bool) -> tuple[BeatModel | None | str, str]:
    """The beat model for a record and where it came from: for MIT-BIH fold ``k`` the model trained
    without that fold; for records of other databases (half A trains the window VT model, half B is never used) the shipped model; with
    ``rules_only`` None, the morphology rules alone (the analyser before the learned model)."""
    if rules_only:
        return None, "rules"
    if k is None:
        return "shipped", "shipped"
    if k not in _models:
        _models[k] = beat_model.load_fold(k), "fold"
    return _models[k]


def sustained_runs(r: evaluation.Record, alarms: list[dict]) -> list[dict]:
    """Reference ventricular runs (``(VT`` or consecutive V) of >= 30 s and when vt_sustained came."""
    sust = [(a["start_s"], a["end_s"]) for a in alarms if a["condition"] == "vt_sustained"]
    out = []
    for a, b in evaluation.ventricular_runs(r):
        if b - a >= SUSTAINED_S:
            hits = [c for c, d in sust if c <= a + SUSTAINED_ALARM_S and d >= a - TOL_S]
            out.append(
                {
                    "record": r.name,
                    "start_s": round(a, 1),
                    "end_s": round(b, 1),
                    "alarm_after_s": round(min(hits) - a, 1) if hits else None,
                }
            )
    return out


def score(task: Task) -> dict:
    kind, name, fold, var, rules_only, with_window = task
    r = variant(evaluation.read_record(str(DATA / DIRS[kind] / name)), var)
    model, origin = fold_model(fold, rules_only)
    # the window VT model likewise: for MIT-BIH fold k the one trained without it
    vt_model = None if rules_only or not with_window else vt_window.load_fold(fold) if fold is not None else "shipped"
    beats, alarms, spent = evaluation.analyse(r, beat_model=model, vt_model=vt_model)
    out = evaluation.score_record(r, beats, alarms)
    out.update(set=kind, fold=fold, variant=var, spent=spent, sustained=sustained_runs(r, alarms), beat_model=origin)
    runs = evaluation.ventricular_runs(r) if kind in ("mitdb", "motion") else []
    out["false_vt_starts"] = [
        a["start_s"]
        for a in alarms
        if a["condition"] == "vt" and not any(a["start_s"] - TOL_S <= e and a["end_s"] + TOL_S >= b for b, e in runs)
    ]
    return out


def em_available() -> bool:
    """Whether simulators/ecg_stress.py can add nstdb's electrode-motion noise (it recovers it from
    nstdb's 118e24 and MIT-BIH 118)."""
    return (DATA / "nstdb" / "118e24.hea").exists() and (DATA / "mitdb" / "118.hea").exists()


def c2015_records() -> list[str]:
    alarms = DATA / "challenge2015" / "ALARMS"
    rows = [ln.split(",") for ln in alarms.read_text().splitlines() if ln.count(",") >= 2]
    return sorted(
        p[0]
        for p in rows
        if p[0].startswith("v")
        and p[1].strip() == "Ventricular_Tachycardia"
        and (DATA / "challenge2015" / f"{p[0]}.hea").exists()
    )


def tasks_for(sets: list[str], noises: list[str]) -> list[Task]:
    tasks: list[Task] = []
    if "mitdb" in sets:
        tasks += [("mitdb", n, k, "native") for k, fold in enumerate(folds.MITDB_FOLDS) for n in fold]
    if "noise" in sets:
        tasks += [("noise", n, folds.mitdb_fold(n), v) for v in noises for n in NOISE_RECORDS]
    if "motion" in sets and em_available():
        tasks += [("motion", n, k, "em6") for k, fold in enumerate(folds.MITDB_FOLDS) for n in fold]
    if "vfdb" in sets:
        tasks += [("vfdb", n, None, "native") for h in folds.VFDB_HALVES.values() for n in h]
    if "c2015" in sets:
        tasks += [("c2015", n, None, "native") for n in c2015_records()]
    return tasks


# ---------------------------------------------------------------- figures
def _sum(rs: list[dict], key: str, sub: str) -> int:
    return sum(r.get(key, {}).get(sub, 0) for r in rs)


def _mean(xs: list[float]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def rhythm_figures(rs: list[dict]) -> dict:
    t = evaluation.pooled(rs)
    runfree = [r for r in rs if r["vt"]["ref_runs"] == 0]
    hours = sum(r["seconds"] for r in runfree) / 3600.0
    false_runfree = sum(r["vt"]["vt_alarms_unmatched"] for r in runfree)
    sus = [s for r in rs for s in r["sustained"]]
    return {
        "records": len(rs),
        "hours": round(t["seconds"] / 3600.0, 2),
        "af": t["af"],
        "vt_episodes": [t["vt"]["episodes_flagged"], t["vt"]["ref_episodes"]],
        "runs": [t["vt"]["flagged"], t["vt"]["ref_runs"]],
        "sustained": [sum(s["alarm_after_s"] is not None for s in sus), len(sus)],
        "sustained_runs": sus,
        "vf": [_sum(rs, "vf", "flagged"), _sum(rs, "vf", "ref_episodes")],
        "false_vt": t["vt"]["vt_alarms_unmatched"],
        "false_vt_runfree": false_runfree,
        "runfree_hours": round(hours, 2),
        "false_vt_per_24h": round(24.0 * false_runfree / hours, 2) if hours else None,
    }


def beat_figures(rs: list[dict]) -> dict:
    t = evaluation.pooled(rs)
    vs = [r["beats"]["v"] for r in rs]
    return {
        "beats": t["beats"],
        "v_mean_se": _mean([v["se"] for v in vs if v["tp"] + v["fn"] > 0]),
        "v_mean_ppv": _mean([v["ppv"] for v in vs if v["tp"] + v["fp"] > 0]),
    }


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def report_mitdb(rs: list[dict]) -> dict:
    by = {r["record"]: r for r in rs}
    groups = {f"fold {k}": [by[n] for n in fold if n in by] for k, fold in enumerate(folds.MITDB_FOLDS)}
    groups["all"] = rs
    groups["non-paced"] = [r for r in rs if r["record"] not in folds.PACED]
    groups["paced"] = [r for r in rs if r["record"] in folds.PACED]
    groups["untouched"] = [r for r in rs if folds.untouched(r["record"])]
    groups["RULES_DEV *"] = [r for r in rs if r["record"] in folds.RULES_DEV]
    groups["looked at *"] = [r for r in rs if r["record"] in folds.LOOKED_AT]
    figs = {g: {**beat_figures(v), **rhythm_figures(v)} for g, v in groups.items() if v}
    print(
        f"MIT-BIH (fold k analysed with the model trained without it; * = rules training figures)\n"
        f"{'group':<12} {'recs':>4} {'TP':>6} {'FN':>4} {'FP':>4} {'Se%':>6} {'+P%':>6} | "
        f"{'V TP':>5} {'FN':>4} {'FP':>4} {'Se%':>6} {'+P%':>6} {'mSe%':>6} {'m+P%':>6}"
    )
    for g, f in figs.items():
        b, v = f["beats"], f["beats"]["v"]
        print(
            f"{g:<12} {f['records']:>4} {b['tp']:>6} {b['fn']:>4} {b['fp']:>4} {pct(b['se']):>6} "
            f"{pct(b['ppv']):>6} | {v['tp']:>5} {v['fn']:>4} {v['fp']:>4} {pct(v['se']):>6} {pct(v['ppv']):>6} "
            f"{pct(f['v_mean_se']):>6} {pct(f['v_mean_ppv']):>6}"
        )
    print(
        f"\n{'':<12} {'':>7} {'':>7} {'':>5} {'':>7} {'run-free records':^20}".rstrip() + "\n"
        f"{'group':<12} {'(VT ep':>7} {'runs>=3':>7} {'sust':>5} {'falseVT':>7} {'falseVT':>7} {'hours':>5} "
        f"{'/24h':>6} {'VF ep':>6} {'AFse%':>6} {'AFsp%':>6}"
    )
    for g, f in figs.items():
        rate = f["false_vt_per_24h"]
        print(
            f"{g:<12} {'%d/%d' % tuple(f['vt_episodes']):>7} {'%d/%d' % tuple(f['runs']):>7} "
            f"{'%d/%d' % tuple(f['sustained']):>5} {f['false_vt']:>7} {f['false_vt_runfree']:>7} "
            f"{f['runfree_hours']:>5.1f} {'-' if rate is None else format(rate, '.2f'):>6} "
            f"{'%d/%d' % tuple(f['vf']):>6} {pct(f['af']['se']):>6} {pct(f['af']['sp']):>6}"
        )
    paced_sp = {r["record"]: r["af"]["sp"] for r in groups["paced"]}
    print("paced records' AF Sp%: " + ("  ".join(f"{n} {pct(s)}" for n, s in paced_sp.items()) or "-"))
    print_sustained(figs["all"]["sustained_runs"])
    return {"groups": figs, "paced_af_sp": paced_sp}


def print_sustained(runs: list[dict]) -> None:
    print(
        f"sustained runs (>= {SUSTAINED_S:.0f} s) and the first vt_sustained on them, from the run's start "
        f"(flagged: before +{SUSTAINED_ALARM_S:.0f} s; negative: already on):" + ("" if runs else " none")
    )
    for s in runs:
        when = "missed" if s["alarm_after_s"] is None else f"vt_sustained at {s['alarm_after_s']:+.1f} s"
        print(f"  {s['record']:<6} {s['start_s']:7.1f}-{s['end_s']:7.1f} s  {when}")


def report_vfdb(rs: list[dict]) -> dict:
    halves = {h: [r for r in rs if folds.vfdb_half(r["record"]) == h] for h in folds.VFDB_HALVES}
    figs = {g: rhythm_figures(v) for g, v in {**halves, "all": rs}.items() if v}
    print(
        f"\nvfdb (rhythm annotations only; half A trains the window VT model, half B is never used)\n"
        f"{'half':<6} {'recs':>4} {'hours':>5} {'(VT ep':>7} {'VF ep':>6} {'AFsp%':>6} {'falseVT':>7} {'sust':>5}"
    )
    for g, f in figs.items():
        print(
            f"{g:<6} {f['records']:>4} {f['hours']:>5.1f} {'%d/%d' % tuple(f['vt_episodes']):>7} "
            f"{'%d/%d' % tuple(f['vf']):>6} {pct(f['af']['sp']):>6} {f['false_vt']:>7} "
            f"{'%d/%d' % tuple(f['sustained']):>5}"
        )
    print_sustained(figs["all"]["sustained_runs"])
    return figs


def c2015_counts(rs: list[dict]) -> dict:
    c = {k: 0 for k in ("tp", "fn", "fp", "tn")}
    for r in rs:
        x = r["challenge2015"]
        c[("t" if x["raised"] == x["true_alarm"] else "f") + ("p" if x["raised"] else "n")] += 1
    den = c["tp"] + c["tn"] + c["fp"] + 5 * c["fn"]
    return {"records": len(rs), **c, "score": round(100.0 * (c["tp"] + c["tn"]) / den, 2) if den else None}


def report_c2015(rs: list[dict]) -> dict:
    groups = {h: [r for r in rs if folds.challenge2015_half(r["record"]) == h] for h in ("A", "B")}
    groups["all"] = rs
    groups["untouched"] = [r for r in rs if folds.untouched(r["record"])]
    figs = {g: c2015_counts(v) for g, v in groups.items() if v}
    print(
        f"\nchallenge2015 VT alarms (judged on 4:44-5:00; score = 100(TP+TN)/(TP+TN+FP+5FN))\n"
        f"{'group':<10} {'recs':>4} {'TP':>4} {'FN':>4} {'FP':>4} {'TN':>4} {'score':>6}"
    )
    for g, f in figs.items():
        print(
            f"{g:<10} {f['records']:>4} {f['tp']:>4} {f['fn']:>4} {f['fp']:>4} {f['tn']:>4} "
            f"{'-' if f['score'] is None else format(f['score'], '.2f'):>6}"
        )
    dev = [r for r in rs if r["record"] in folds.RULES_DEV]
    print(
        "looked at since the split (in 'all', not in 'untouched'): "
        + " ".join(r["record"] for r in rs if r["record"] in folds.LOOKED_AT)
        + "\nfirst wave (rules development, in 'all', not in 'untouched'): "
        + (
            "  ".join(
                f"{r['record']} ({'true' if r['challenge2015']['true_alarm'] else 'false'} alarm, "
                f"{'raised' if r['challenge2015']['raised'] else 'suppressed'})"
                for r in dev
            )
            or "-"
        )
    )
    return figs


def report_noise(rs: list[dict], native: list[dict], em: bool) -> dict:
    groups = {"native": [r for r in native if r["record"] in NOISE_RECORDS]} if native else {}
    for r in rs:
        groups.setdefault(r["variant"], []).append(r)
    figs = {g: beat_figures(v) for g, v in groups.items() if v}
    print(
        f"\nnoise stress, MIT-BIH {' and '.join(NOISE_RECORDS)} (each with its fold's model)\n"
        f"{'noise':<7} {'TP':>6} {'FN':>4} {'FP':>4} {'Se%':>6} {'+P%':>6} | {'V Se%':>6} {'V +P%':>6}"
    )
    for g, f in figs.items():
        b = f["beats"]
        print(
            f"{g:<7} {b['tp']:>6} {b['fn']:>4} {b['fp']:>4} {pct(b['se']):>6} {pct(b['ppv']):>6} | "
            f"{pct(b['v']['se']):>6} {pct(b['v']['ppv']):>6}"
        )
    if not em:
        print(
            "(em6 not run: nstdb's electrode-motion noise record is not in the shared data, so muscle (ma) "
            "and baseline-wander (bw) noise stand in for it)"
        )
    return figs


def report_motion(rs: list[dict], native: list[dict]) -> dict:
    """False alarms of the 41 MIT-BIH records with electrode-motion noise at 6 dB."""
    starts = noise_segment(np.array([t for r in rs for t in r["false_vt_starts"]])).tolist()
    learnt = sum(1 for k in starts if k in MOTION_LEARNT)
    tested = sum(1 for k in starts if k >= 0 and k not in MOTION_LEARNT)
    clean = sum(1 for k in starts if k < 0)
    non_af = sum(r["af"]["non_af_s"] or 0.0 for r in rs)
    false_af = sum((r["af"]["non_af_s"] or 0.0) * (1.0 - (r["af"]["sp"] or 0.0)) for r in rs)
    figs = {
        "false_vt": len(starts),
        "false_vt_learnt_segments": learnt,
        "false_vt_other_segments": tested,
        "false_vt_clean_parts": clean,
        "af_sp": round(100.0 * (1.0 - false_af / non_af), 2) if non_af else None,
    }
    same = [r for r in native if r["record"] in {m["record"] for m in rs}]
    native_vt = sum(len(r["false_vt_starts"]) for r in same) if same else None
    print(
        f"\nelectrode motion at 6 dB on the {len(rs)} MIT-BIH records (each with its fold's models): false vt "
        f"{len(starts)} (noisy segments the VT noise rule was chosen on {learnt}, the other noisy segments "
        f"{tested}, clean parts {clean}; the same records without noise {native_vt if native_vt is not None else '-'}), "
        f"AF Sp {pct(figs['af_sp'] / 100.0 if figs['af_sp'] is not None else None)}"
    )
    return figs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ",".join(SETS))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one record each)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON here")
    ap.add_argument(
        "--rules-only",
        action="store_true",
        help="score the morphology rules alone (the analyser before the learned beat model)",
    )
    ap.add_argument("--no-vt-window", action="store_true", help="beat runs alone judge VT (no window VT model)")
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    a = ap.parse_args()
    with doc_block.captured(a.doc, "ecg_crossval", "python bench/ecg_crossval.py"):
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    sets = [s for s in a.sets.split(",") if s]
    if unknown := set(sets) - set(SETS):
        sys.exit(f"ecg_crossval: unknown set(s) {','.join(sorted(unknown))}; use {','.join(SETS)}")
    for s in sets:
        if not (DATA / DIRS[s]).is_dir():
            sys.exit(f"ecg_crossval: data directory not found: {DATA / DIRS[s]}")
    if "c2015" in sets and not (DATA / "challenge2015" / "ALARMS").exists():
        sys.exit(f"ecg_crossval: alarm list not found: {DATA / 'challenge2015' / 'ALARMS'}")
    em = em_available()
    tasks = [(*t, a.rules_only, not a.no_vt_window) for t in tasks_for(sets, ["ma6", "bw6"] + (["em6"] if em else []))]
    missing = [DATA / DIRS[k] / f"{n}.hea" for k, n, *_ in tasks if not (DATA / DIRS[k] / f"{n}.hea").exists()]
    if missing:
        sys.exit(f"ecg_crossval: record not found: {missing[0]}")
    results: list[dict] = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        futures = {pool.submit(score, t): t for t in tasks}
        for i, fut in enumerate(as_completed(futures), 1):
            results.append(fut.result())
            kind, name, _, var, _, _ = futures[fut]
            print(f"[{i}/{len(tasks)}] {name}{'' if var == 'native' else ' ' + var} done", file=sys.stderr, flush=True)
    results.sort(key=lambda r: (r["set"], r["record"], r["variant"]))
    by_set = {s: [r for r in results if r["set"] == s] for s in SETS}
    print(
        "beat classifier: "
        + (
            "the morphology rules alone"
            if a.rules_only
            else f"learned model {beat_model.MODEL_NAME} (MIT-BIH: the fold's model trained without it; other sets: shipped)"
        )
    )
    window = not (a.rules_only or a.no_vt_window)
    print(
        "VT: beat runs"
        + (
            f" and the window model {vt_window.MODEL_NAME} (MIT-BIH: the fold's model trained "
            "without it, with vfdb half A; other sets: shipped)"
            if window
            else " alone"
        )
    )
    out: dict = {
        "beat_model": "rules" if a.rules_only else beat_model.MODEL_NAME,
        "vt_window_model": vt_window.MODEL_NAME if window else None,
    }
    if by_set["mitdb"]:
        out["mitdb"] = report_mitdb(by_set["mitdb"])
    if by_set["vfdb"]:
        out["vfdb"] = report_vfdb(by_set["vfdb"])
    if by_set["c2015"]:
        out["c2015"] = report_c2015(by_set["c2015"])
    if by_set["noise"]:
        out["noise"] = report_noise(by_set["noise"], by_set["mitdb"], em)
    if by_set["motion"]:
        out["motion"] = report_motion(by_set["motion"], by_set["mitdb"])
    seconds, spent = sum(r["seconds"] for r in results), sum(r["spent"] for r in results)
    out["realtime_factor"] = round(seconds / spent, 1) if spent else None
    print(
        f"\nrealtime factor (analysis only): {out['realtime_factor']}x "
        f"({seconds / 3600:.1f} h of ECG in {spent:.0f} s over {len(results)} records)"
    )
    if a.json:
        out["records"] = [{k: v for k, v in r.items() if k != "path"} for r in results]
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
