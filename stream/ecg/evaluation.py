"""``vitalgate ecg-eval RECORD... [--json]``: score the streaming analyser on WFDB records.

Each record (a path without extension; ``.hea``/``.dat``/``.atr``/``.mat``
suffixes are stripped and duplicates dropped, so a shell glob works) is read
with ``wfdb``, its ECG lead chosen (the first channel whose name looks like
an ECG lead, else channel 0), converted to µV and pushed through
:class:`stream.ecg.analyser.EcgAnalyser` in 1-second chunks, exactly as the
gateway does.  Scores (see ``docs/spec/public-surface.md``):

* beats: ±150 ms matching against every reference beat label; detections
  inside ventricular flutter/fibrillation spans (``[`` … ``]``) are not false
  positives;
* AF (AFIB + AFL): duration sensitivity / specificity of the time covered by
  the analyser's ``af`` alarms, pooled over all records in ``total``;
* VT: reference ``(VT`` episodes and runs of >= 3 consecutive ``V`` beats
  (merged where they overlap), flagged when a ``vt``/``vt_sustained`` alarm
  overlaps them;
* ``alarms``: every alarm the analyser raised, with times from the record start.

``challenge2017`` records (whose header wfdb rejects) are read with SciPy;
their ``REFERENCE.csv`` label (``A`` = AF for the whole strip) is the AF
reference.  ``challenge2015`` records also report whether the monitor alarm
at 5:00 was reproduced (true alarms) or suppressed (false ones).

Exit status 0 whatever the scores; 2 when a record cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from stream.ecg.analyser import EcgAnalyser
from stream.ecg.beat_model import BeatModel
from stream.ecg.vt_window import VtWindowModel
from stream.extras import need

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
VENTRICULAR = "V"
MATCH_S = 0.150
# ECG channel names across PhysioNet databases: limb and chest leads (II, aVF, V1-V6, a bare "V" in the
# 2015 challenge), modified and bipolar chest leads (MLII, ML2, MV2, mod.V1, MCL1, CM5, CC5), the Italian
# D1-D3 (European ST-T), and generic "ECG", "ECG1", "ECG lead II" -- not PLETH, ABP, RESP, CVP, ...
ECG_LEAD = re.compile(
    r"^(?:(?:ecg\s*)?(?:lead\s*)?(?:(?:ml|m)?i{1,3}|a?vr|a?vl|a?vf|(?:mod\.?\s*|m)?v[1-6]?|d(?:i{1,3}|[1-3])"
    r"|mcl[1-6]?|cm[1-6]|cc[1-6])|(?:(?:ecg\s*)?lead\s*|ml|m)[1-3]|ecg\d*)$",
    re.IGNORECASE,
)
AF_LABELS = ("(AFIB", "(AFL")
VF_LABELS = ("(VF", "(VFL", "(VFIB")
VF_MERGE_S = 2.0  # contract: VF/VFL episodes under 2 s apart are one ...
VF_MIN_S = 3.0  # ... at least 3 s long, flagged by a vt or vt_sustained alarm starting
VF_LATE_S = 10.0  # up to 10 s after its end
CHALLENGE2015_CONDITIONS = {
    "asystole": ("asystole",),
    "bradycardia": ("bradycardia",),
    "tachycardia": ("tachycardia", "af_rvr", "vt", "vt_sustained"),
    "ventricular_tachycardia": ("vt", "vt_sustained"),
    "ventricular_flutter_fib": ("vt_sustained",),
}
CHALLENGE2015_WINDOW_S = (284.0, 300.0)  # the challenge's 16 s before the alarm at 5:00


class RecordError(Exception):
    """A record that cannot be read."""


@dataclass
class Record:
    name: str
    path: str
    fs: float
    signal_uv: np.ndarray
    lead: str
    ann_sample: np.ndarray | None = None
    ann_symbol: list[str] = field(default_factory=list)
    ann_aux: list[str] = field(default_factory=list)
    label: str | None = None  # challenge2017 REFERENCE.csv label
    alarm: tuple[str, bool] | None = None  # challenge2015 (alarm type, true alarm)

    @property
    def seconds(self) -> float:
        return len(self.signal_uv) / self.fs


# ---------------------------------------------------------------- reading
def _strip_ext(p: str) -> str:
    for ext in (".hea", ".dat", ".atr", ".mat", ".qrs"):
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


def choose_lead(names: list[str]) -> int:
    """Index of the first channel named like an ECG lead, else 0."""
    for i, n in enumerate(names):
        if ECG_LEAD.match(n.strip()):
            return i
    return 0


def _unit_scale(unit: str) -> float:
    u = (unit or "mV").strip().lower()
    return {"uv": 1.0, "µv": 1.0, "mv": 1000.0, "v": 1e6}.get(u, 1000.0)


def _read_mat_record(path: str) -> tuple[np.ndarray, float, str]:
    """A challenge2017-style record: header parsed by hand, samples from the .mat."""
    from scipy.io import loadmat

    lines = [ln.strip() for ln in Path(path + ".hea").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    first = lines[0].split()
    fs = float(first[2].split("/")[0]) if len(first) > 2 else 300.0
    gain, unit, name = 1000.0, "mV", "ECG"
    if len(lines) > 1:
        f = lines[1].split()
        if len(f) > 2:
            m = re.match(r"([-+0-9.eE]+)(?:\(([-0-9]+)\))?(?:/(\S+))?", f[2])
            if m:
                gain = float(m.group(1)) or 1000.0
                unit = m.group(3) or "mV"
        if len(f) > 8:
            name = f[8]
    val = loadmat(path + ".mat")["val"]
    x = np.asarray(val[0], dtype=np.float64) / gain * _unit_scale(unit)
    return x, fs, name


def read_record(path: str) -> Record:
    """Read one record (signal in µV, reference annotations if any)."""
    wfdb = need("wfdb", "records", "reading WFDB records")

    name = os.path.basename(path)
    if not os.path.exists(path + ".hea"):
        raise RecordError(f"no header {path}.hea")
    try:
        header = wfdb.rdheader(path)
        idx = choose_lead(list(header.sig_name or []))
        rec = wfdb.rdrecord(path, channels=[idx])
        x = rec.p_signal[:, 0] * _unit_scale(rec.units[0] if rec.units else "mV")
        fs = float(rec.fs)
        lead = rec.sig_name[0]
        comments = list(header.comments or [])
    except Exception as exc:  # wfdb raises many types; fall back to a .mat signal file
        if not os.path.exists(path + ".mat"):
            raise RecordError(f"{path}: {exc}") from exc
        try:
            x, fs, lead = _read_mat_record(path)
        except Exception as exc2:
            raise RecordError(f"{path}: {exc2}") from exc2
        comments = []
    if len(x) == 0 or not np.isfinite(fs) or fs <= 0:
        raise RecordError(f"{path}: empty record")
    r = Record(name=name, path=path, fs=fs, signal_uv=x, lead=lead)
    if os.path.exists(path + ".atr"):
        try:
            ann = wfdb.rdann(path, "atr")
        except Exception as exc:
            raise RecordError(f"{path}.atr: {exc}") from exc
        r.ann_sample = np.asarray(ann.sample)
        r.ann_symbol = list(ann.symbol)
        r.ann_aux = [a.strip("\x00").strip() if a else "" for a in (ann.aux_note or [""] * len(ann.sample))]
    ref_csv = Path(path).parent / "REFERENCE.csv"
    if ref_csv.exists():
        for line in ref_csv.read_text().splitlines():
            parts = line.strip().split(",")
            if len(parts) >= 2 and parts[0] == name:
                r.label = parts[1].strip()
    r.alarm = _challenge2015_alarm(path, comments)
    return r


def _challenge2015_alarm(path: str, comments: list[str]) -> tuple[str, bool] | None:
    name = os.path.basename(path)
    alarms = Path(path).parent / "ALARMS"
    if alarms.exists():
        for line in alarms.read_text().splitlines():
            parts = line.strip().split(",")
            if len(parts) >= 3 and parts[0] == name:
                return parts[1].strip().lower(), parts[2].strip() == "1"
    if len(comments) >= 2 and comments[-1].strip().lower() in ("true alarm", "false alarm"):
        return comments[-2].strip().lower().replace(" ", "_"), comments[-1].strip().lower() == "true alarm"
    return None


# ---------------------------------------------------------------- reference
def rhythm_episodes(r: Record) -> list[tuple[str, float, float]]:
    """(label, start_s, end_s) from the rhythm aux notes of ``+`` annotations."""
    if r.ann_sample is None:
        return []
    out = []
    cur, start = None, 0.0
    for s, sym, aux in zip(r.ann_sample, r.ann_symbol, r.ann_aux):
        if sym == "+" and aux.startswith("("):
            t = s / r.fs
            if cur is not None:
                out.append((cur, start, t))
            cur, start = aux, t
    if cur is not None:
        out.append((cur, start, r.seconds))
    return out


def vf_spans(r: Record) -> list[tuple[float, float]]:
    """Ventricular flutter/fibrillation spans ``[`` … ``]`` (s)."""
    if r.ann_sample is None:
        return []
    spans, start = [], None
    for s, sym in zip(r.ann_sample, r.ann_symbol):
        if sym == "[":
            start = s / r.fs
        elif sym == "]" and start is not None:
            spans.append((start, s / r.fs))
            start = None
    if start is not None:
        spans.append((start, r.seconds))
    return spans


def reference_beats(r: Record) -> tuple[np.ndarray, list[str]]:
    if r.ann_sample is None:
        return np.zeros(0), []
    keep = [i for i, s in enumerate(r.ann_symbol) if s in BEAT_SYMBOLS]
    return r.ann_sample[keep] / r.fs, [r.ann_symbol[i] for i in keep]


def ventricular_runs(r: Record) -> list[tuple[float, float]]:
    """Reference (VT episodes and runs of >= 3 consecutive V beats, merged where they overlap."""
    t, sym = reference_beats(r)
    runs: list[tuple[float, float]] = []
    i = 0
    while i < len(sym):
        if sym[i] == VENTRICULAR:
            j = i
            while j + 1 < len(sym) and sym[j + 1] == VENTRICULAR:
                j += 1
            if j - i + 1 >= 3:
                runs.append((float(t[i]), float(t[j])))
            i = j + 1
        else:
            i += 1
    runs += [(a, b) for lab, a, b in rhythm_episodes(r) if lab == "(VT"]
    runs.sort()
    merged: list[list[float]] = []
    for a, b in runs:
        if merged and a <= merged[-1][1] + 0.5:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


# ---------------------------------------------------------------- scoring
def match_beats(ref: np.ndarray, det: np.ndarray, tol: float) -> tuple[int, np.ndarray]:
    """One-to-one matching in time order; returns TP and a mask of unmatched detections."""
    used = np.zeros(len(det), dtype=bool)
    tp = 0
    j = 0
    for t in ref:
        while j < len(det) and det[j] < t - tol:
            j += 1
        # the nearest unused detection within tolerance (look at j and j+1)
        best = -1
        for k in (j, j + 1):
            if k < len(det) and not used[k] and abs(det[k] - t) <= tol:
                if best < 0 or abs(det[k] - t) < abs(det[best] - t):
                    best = k
        if best >= 0:
            used[best] = True
            tp += 1
            if best == j:
                j += 1
    return tp, ~used


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _union_len(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -1e18
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _intersect_len(xs: list[tuple[float, float]], ys: list[tuple[float, float]]) -> float:
    # both lists are unions of disjoint spans after merging
    def merge(s: list[tuple[float, float]]) -> list[list[float]]:
        out: list[list[float]] = []
        for a, b in sorted(s):
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        return out

    total = 0.0
    for a0, a1 in merge(xs):
        for b0, b1 in merge(ys):
            total += _overlap(a0, a1, b0, b1)
    return total


def _merge_spans(spans: list[tuple[float, float]], slack: float = 1.0) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + slack:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None


def analyse(
    r: Record,
    progress: bool = False,
    beat_model: BeatModel | None | str = "shipped",
    vt_model: VtWindowModel | None | str = "shipped",
) -> tuple[list[tuple[float, str]], list[dict], float]:
    """Stream the record through the analyser; returns beats, alarm spans and analysis seconds.

    ``beat_model``: the shipped model by default, a cross-validation fold's model, or None for the
    morphology rules alone; ``vt_model`` likewise for the 4-s window VT model.
    """
    an = EcgAnalyser(r.fs, beat_model=beat_model, vt_model=vt_model)
    n = max(1, int(round(r.fs)))
    x = r.signal_uv
    beats: list[tuple[float, str]] = []
    open_: dict[str, dict] = {}
    spans: list[dict] = []
    spent = 0.0
    total = len(x)
    show = progress and r.seconds > 300 and sys.stderr.isatty()
    last_shown = -1
    for k in range(0, total + n, n):
        t = time.perf_counter()
        if k < total:
            alarms = an.push(x[k : k + n], t0_s=k / r.fs)
        else:
            alarms = an.flush()  # a last chunk shorter than a frame was held back
        beats.extend(an.drain_beats())
        spent += time.perf_counter() - t
        for a in alarms:
            if a.active:
                if a.condition not in open_:
                    open_[a.condition] = {"condition": a.condition, "start_s": a.start_s, "end_s": None}
            else:
                o = open_.pop(a.condition, None)
                if o is None:
                    o = {"condition": a.condition, "start_s": a.start_s}
                o["end_s"] = a.end_s if a.end_s is not None else a.start_s
                spans.append(o)
        if show:
            pct = int(100 * (k + n) / total)
            if pct // 5 != last_shown:
                last_shown = pct // 5
                bar = "#" * (pct // 5) + "-" * (20 - pct // 5)
                print(f"\r  {r.name} [{bar}] {min(pct, 100):3d}%", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    for o in open_.values():
        o["end_s"] = round(r.seconds, 3)
        o["open_at_end"] = True
        spans.append(o)
    spans.sort(key=lambda s: (s["start_s"], s["condition"]))
    return beats, spans, spent


def _nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Index of the nearest element of the sorted, non-empty ``dst`` for each time in ``src``."""
    hi = np.clip(np.searchsorted(dst, src), 0, len(dst) - 1)
    lo = np.maximum(hi - 1, 0)
    return np.where(np.abs(dst[lo] - src) <= np.abs(dst[hi] - src), lo, hi)


def ventricular_class(
    ref_t: np.ndarray, ref_sym: list[str], det: np.ndarray, det_cls: list[str], tol: float = MATCH_S
) -> dict:
    """AAMI EC57 ventricular-class counts over matched beats.

    A reference and a detected beat are matched when each is the other's nearest within ``tol``
    (one-to-one by construction).  Reference ``V`` and ``E`` are the V class; fusion ``F`` counts
    in neither.  TP: a matched reference V/E detected as "V"; FN: a reference V/E detected as
    anything else or not detected at all (EC57 counts a missed ventricular beat against Se); FP: a
    detected "V" matched to a reference beat outside V/E/F.  Extra detections are left to the beat
    scores.
    """
    tp = fp = 0
    ref_v_total = sum(1 for x in ref_sym if x in ("V", "E"))
    if len(ref_t) and len(det):
        d_of_r = _nearest(ref_t, det)
        r_of_d = _nearest(det, ref_t)
        ri = np.flatnonzero((r_of_d[d_of_r] == np.arange(len(ref_t))) & (np.abs(det[d_of_r] - ref_t) <= tol))
        sym = np.asarray(ref_sym, dtype=object)[ri]
        is_v = np.asarray(det_cls, dtype=object)[d_of_r[ri]] == "V"
        ref_v = (sym == "V") | (sym == "E")
        tp = int((ref_v & is_v).sum())
        fp = int((~ref_v & (sym != "F") & is_v).sum())
    fn = ref_v_total - tp
    return {"tp": tp, "fn": fn, "fp": fp, "se": _ratio(tp, tp + fn), "ppv": _ratio(tp, tp + fp)}


def score_record(r: Record, beats: list[tuple[float, str]], alarms: list[dict]) -> dict:
    out: dict = {"record": r.name, "path": r.path, "fs": r.fs, "lead": r.lead, "seconds": round(r.seconds, 3)}
    det = np.array([b[0] for b in beats])
    det_cls = [b[1] for b in beats]
    ref_t, ref_sym = reference_beats(r)
    vfs = vf_spans(r)
    if r.ann_sample is not None and len(ref_t):
        tp, unmatched = match_beats(ref_t, det, MATCH_S)
        fp_mask = unmatched.copy()
        for a, b in vfs:
            fp_mask &= ~((det >= a) & (det <= b))
        fp = int(fp_mask.sum())
        fn = len(ref_t) - tp
        out["beats"] = {
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "se": _ratio(tp, tp + fn),
            "ppv": _ratio(tp, tp + fp),
            "detected": len(det),
            "ventricular_detected": det_cls.count("V"),
            "ventricular_ref": ref_sym.count("V"),
            "v": ventricular_class(ref_t, ref_sym, det, det_cls),
        }
    else:
        out["beats"] = {
            "tp": None,
            "fn": None,
            "fp": None,
            "se": None,
            "ppv": None,
            "detected": len(det),
            "ventricular_detected": det_cls.count("V"),
        }

    # AF by duration
    episodes = rhythm_episodes(r)
    if r.label is not None:
        ref_af = [(0.0, r.seconds)] if r.label == "A" else []
    else:
        ref_af = [(a, b) for lab, a, b in episodes if lab in AF_LABELS]
    flagged = [(a["start_s"], a["end_s"]) for a in alarms if a["condition"] in ("af", "af_rvr")]
    flagged = [(max(0.0, a), min(r.seconds, b)) for a, b in flagged if b > a]
    ref_s = _union_len(ref_af)
    flag_s = _union_len(flagged)
    both = _intersect_len(ref_af, flagged)
    non_af = r.seconds - ref_s
    out["af"] = {
        "se": _ratio(both, ref_s),
        "sp": _ratio(non_af - (flag_s - both), non_af),
        "ref_s": round(ref_s, 1),
        "flagged_s": round(flag_s, 1),
        "tp_s": round(both, 1),
        "non_af_s": round(non_af, 1),
        "ref_episodes": len(ref_af),
        "ref_episodes_flagged": sum(1 for a, b in ref_af if any(_overlap(a, b, c, d) > 0 for c, d in flagged)),
        "alarm_episodes": len(_merge_spans(flagged)),  # af_rvr lies inside its af span: not an episode
    }

    # VT runs
    runs = ventricular_runs(r)
    vt_alarms = [(a["start_s"], a["end_s"]) for a in alarms if a["condition"] in ("vt", "vt_sustained")]
    tol = 1.0
    flagged_runs = sum(1 for a, b in runs if any(c <= b + tol and d >= a - tol for c, d in vt_alarms))
    allowed = runs + [(a, b) for lab, a, b in episodes if lab in VF_LABELS] + vfs
    false_vt = sum(1 for c, d in vt_alarms if not any(c <= b + tol and d >= a - tol for a, b in allowed))
    vt_eps = [(a, b) for lab, a, b in episodes if lab == "(VT"]
    out["vt"] = {
        "ref_runs": len(runs),
        "flagged": flagged_runs,
        "vt_alarms": len(vt_alarms),
        "vt_alarms_unmatched": false_vt,
        "ref_episodes": len(vt_eps),
        "episodes_flagged": sum(1 for a, b in vt_eps if any(c <= b + tol and d >= a - tol for c, d in vt_alarms)),
    }
    vf_ref = [
        (a, b)
        for a, b in _merge_spans([(a, b) for lab, a, b in episodes if lab in VF_LABELS] + vfs, slack=VF_MERGE_S)
        if b - a >= VF_MIN_S
    ]
    if vf_ref:
        out["vf"] = {
            "ref_episodes": len(vf_ref),
            "flagged": sum(1 for a, b in vf_ref if any(c <= b + VF_LATE_S and d >= a for c, d in vt_alarms)),
        }
    if r.alarm is not None:
        kind, true_alarm = r.alarm
        conds = CHALLENGE2015_CONDITIONS.get(kind, ())
        w0, w1 = CHALLENGE2015_WINDOW_S
        raised = any(a["condition"] in conds and a["start_s"] <= w1 + 1e-9 and a["end_s"] >= w0 for a in alarms)
        out["challenge2015"] = {
            "alarm": kind,
            "true_alarm": true_alarm,
            "raised": raised,
            "correct": raised == true_alarm,
        }
    if r.label is not None:
        out["label"] = r.label
    out["alarms"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in a.items()} for a in alarms]
    return out


def pooled(results: list[dict]) -> dict:
    tp = sum(r["beats"]["tp"] or 0 for r in results)
    fn = sum(r["beats"]["fn"] or 0 for r in results)
    fp = sum(r["beats"]["fp"] or 0 for r in results)
    ref_s = sum(r["af"]["ref_s"] for r in results)
    tp_s = sum(r["af"]["tp_s"] for r in results)
    non_af = sum(r["af"]["non_af_s"] for r in results)
    fp_s = sum(r["af"]["flagged_s"] - r["af"]["tp_s"] for r in results)
    total: dict = {
        "records": len(results),
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "beats": {"tp": tp, "fn": fn, "fp": fp, "se": _ratio(tp, tp + fn), "ppv": _ratio(tp, tp + fp)},
        "af": {
            "se": _ratio(tp_s, ref_s),
            "sp": _ratio(non_af - fp_s, non_af),
            "ref_s": round(ref_s, 1),
            "flagged_s": round(sum(r["af"]["flagged_s"] for r in results), 1),
        },
        "vt": {
            "ref_runs": sum(r["vt"]["ref_runs"] for r in results),
            "flagged": sum(r["vt"]["flagged"] for r in results),
            "vt_alarms_unmatched": sum(r["vt"]["vt_alarms_unmatched"] for r in results),
            "ref_episodes": sum(r["vt"].get("ref_episodes", 0) for r in results),
            "episodes_flagged": sum(r["vt"].get("episodes_flagged", 0) for r in results),
        },
    }
    vf = [r["vf"] for r in results if "vf" in r]
    if vf:
        total["vf"] = {"ref_episodes": sum(v["ref_episodes"] for v in vf), "flagged": sum(v["flagged"] for v in vf)}
    vs = [r["beats"]["v"] for r in results if r["beats"].get("v") is not None]
    if vs:
        vtp, vfn, vfp = (sum(v[k] for v in vs) for k in ("tp", "fn", "fp"))
        total["beats"]["v"] = {
            "tp": vtp,
            "fn": vfn,
            "fp": vfp,
            "se": _ratio(vtp, vtp + vfn),
            "ppv": _ratio(vtp, vtp + vfp),
        }
    counts: dict[str, int] = {}
    for r in results:
        for a in r["alarms"]:
            counts[a["condition"]] = counts.get(a["condition"], 0) + 1
    total["alarm_counts"] = dict(sorted(counts.items()))
    c15 = [r["challenge2015"] for r in results if "challenge2015" in r]
    if c15:
        total["challenge2015"] = {"records": len(c15), "correct": sum(1 for c in c15 if c["correct"])}
    return total


# ---------------------------------------------------------------- output
def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:6.2f}" if pct else str(v)


def print_table(results: list[dict], total: dict, rtf: float, out: TextIO = sys.stdout) -> None:
    hdr = f"{'record':<10} {'sec':>7} {'TP':>6} {'FN':>5} {'FP':>5} {'Se%':>7} {'PPV%':>7} {'AFse%':>7} {'AFsp%':>7} {'VT':>6}  alarms"
    print(hdr, file=out)
    for r in results:
        b, af, vt = r["beats"], r["af"], r["vt"]
        counts: dict[str, int] = {}
        for a in r["alarms"]:
            counts[a["condition"]] = counts.get(a["condition"], 0) + 1
        al = " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"
        print(
            f"{r['record']:<10} {r['seconds']:7.0f} {_fmt(b['tp'], False):>6} {_fmt(b['fn'], False):>5} "
            f"{_fmt(b['fp'], False):>5} {_fmt(b['se']):>7} {_fmt(b['ppv']):>7} {_fmt(af['se']):>7} "
            f"{_fmt(af['sp']):>7} {vt['flagged']:>2}/{vt['ref_runs']:<3}  {al}",
            file=out,
        )
    b, af, vt = total["beats"], total["af"], total["vt"]
    print(
        f"{'TOTAL':<10} {total['seconds']:7.0f} {b['tp']:>6} {b['fn']:>5} {b['fp']:>5} {_fmt(b['se']):>7} "
        f"{_fmt(b['ppv']):>7} {_fmt(af['se']):>7} {_fmt(af['sp']):>7} {vt['flagged']:>2}/{vt['ref_runs']:<3}",
        file=out,
    )
    extra = []
    if (v := b.get("v")) is not None:
        extra.append(
            f"V beats Se {_fmt(v['se']).strip()} % +P {_fmt(v['ppv']).strip()} % (TP {v['tp']} FN {v['fn']} FP {v['fp']})"
        )
    if vt.get("ref_episodes"):
        extra.append(f"(VT episodes flagged {vt['episodes_flagged']}/{vt['ref_episodes']}")
    if (vf := total.get("vf")) is not None:
        extra.append(f"VF/VFL episodes flagged {vf['flagged']}/{vf['ref_episodes']}")
    if (c := total.get("challenge2015")) is not None:
        extra.append(f"2015 alarms correct {c['correct']}/{c['records']}")
    for line in extra:
        print(line, file=out)
    print(f"realtime factor (analysis only): {rtf:.0f}x", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vitalgate ecg-eval", description="Score the streaming ECG analyser on WFDB records."
    )
    parser.add_argument("records", nargs="+", metavar="RECORD", help="record path without extension")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    paths: list[str] = []
    for p in args.records:
        q = _strip_ext(p)
        if os.path.basename(q) in ("ALARMS", "REFERENCE.csv", "SHA256SUMS", "RECORDS", "README.md"):
            continue
        if q not in paths:
            paths.append(q)
    results = []
    seconds = 0.0
    spent = 0.0
    for i, p in enumerate(paths):
        try:
            rec = read_record(p)
        except RecordError as exc:
            print(f"ecg-eval: cannot read record {p}: {exc}", file=sys.stderr)
            return 2
        beats, alarms, s = analyse(rec, progress=True)
        seconds += rec.seconds
        spent += s
        results.append(score_record(rec, beats, alarms))
        b = results[-1]["beats"]
        print(
            f"ecg-eval: [{i + 1}/{len(paths)}] {rec.name}: {rec.seconds:.0f} s analysed in {s:.2f} s"
            + (
                f", Se {100 * b['se']:.2f} % PPV {100 * b['ppv']:.2f} %"
                if b["se"] is not None and b["ppv"] is not None
                else ""
            ),
            file=sys.stderr,
        )
    total = pooled(results)
    rtf = round(seconds / spent, 1) if spent > 0 else None
    if args.json:
        json.dump({"records": results, "total": total, "realtime_factor": rtf}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(results, total, rtf or 0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
