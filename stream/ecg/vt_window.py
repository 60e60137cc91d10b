"""Ventricular tachycardia judged on 4-s windows of signal, by a learned model.

The beat-run detector (:class:`stream.ecg.rhythms.VtDetector`) needs three
consecutive beats each called ventricular; in polymorphic or irregular VT the
beat model often calls one complex of each run normal (its shape is closer to a
template learnt minutes before than to the ventricular beats it knows), and the
run never forms.  This detector looks at the window instead, the way a reader
of the strip does: how fast, how wide, how alike the complexes are, how sure the
beat model is on average, how the signal's power is spread (VT concentrates it
at its rate and a few harmonics, sinus complexes are sharp and carry more above
10 Hz), and how clean the frames are.

Gradient-boosted trees (``scripts/train_vt_window_model.py``) trained inter-patient
on MIT-BIH folds and vfdb half A, labelled by the reference rhythm annotations;
shipped as ``models/vtwin-v1.npz`` (numpy walk, :mod:`stream.ecg.flat_trees`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from stream.ecg.flat_trees import FlatTrees
from stream.ecg.rhythms import Transition, vf_leakage

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAME = "vtwin-v1"
WINDOW_S = 4.0
# chosen on the tuning halves only (vfdb A, 2015 alarms A) from 0.5-0.95 x 1-3 windows: docs/ecg.md
P_RAISE = 0.95  # P(VT) at or above this counts towards raising
RAISE_WINDOWS = 2  # consecutive windows (1 s apart) to raise ``vt``
CLEAR_WINDOWS = 3  # consecutive windows below to clear it
SUSTAINED_S = 30.0  # held this long: ``vt_sustained``
# a window is judged only when a beat in it has P(V) >= WORTH_P_V or it holds >= WORTH_BEATS beats
# (>= 105 bpm); the others cannot be VT and cost nothing
WORTH_P_V = 0.05
WORTH_BEATS = 7

FEATURES: tuple[str, ...] = (
    "n_beats",
    "rate_bpm",
    "rr_cv",
    "pv_mean",
    "pv_min",
    "pv_max",
    "v_frac",
    "rel_w_median",
    "width_ms_median",
    "corr_median",
    "prev_corr_median",
    "prev_corr_min",
    "amp_ratio_median",
    "good_frac",
    "noisy_frac",
    "sqi_mean",
    "dominant_hz",
    "dominant_share",
    "lf_share",
    "hf_share",
    "leakage",
    "ptp_rel",
    "kurtosis",
)


@dataclass(frozen=True, slots=True)  # 64 kept per patient: no per-instance __dict__
class WindowBeat:
    t: float
    p_v: float  # the beat model's P(V) (the rules' 0/1 when no model)
    rel_w: float
    width_ms: float
    corr: float
    prev_corr: float
    amp_ratio: float  # 1.0 when the patient's normal amplitude is not known yet
    reliable: bool = True  # the beats around it have recurring morphologies (not noise)


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@lru_cache(maxsize=8)
def _spectrum_plan(
    n: int, fs: float
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], float]:
    """Hann window, frequencies and the bin ranges the features use, for ``n`` samples at ``fs``."""
    freqs = np.fft.rfftfreq(n, 1.0 / fs)

    def span(lo: float, hi: float) -> tuple[int, int]:
        return int(np.searchsorted(freqs, lo, "left")), int(np.searchsorted(freqs, hi, "right"))

    return (
        np.hanning(n),
        freqs,
        span(0.5, 40.0),
        span(0.5, 15.0),
        span(1.0, 6.0),
        span(10.0, 40.0),
        float(freqs[1]) if n > 1 else 1.0,
    )


def window_features(
    t_end: float,
    beats: deque[WindowBeat],
    frames: deque[tuple[float, bool, bool, float]],
    w: np.ndarray,
    fs: float,
    normal_amp: float,
) -> np.ndarray:
    """The feature vector (``FEATURES`` order) of the window ending at ``t_end``.

    ``frames``: (duration s, good, noisy, sqi) of the window's frames; ``w``: the window's
    0.7-40 Hz signal (µV); ``normal_amp``: the patient's normal QRS amplitude (µV, 0 unknown).
    Computed every second for every patient: plain Python over the few beats, one FFT.
    """
    bs: list[WindowBeat] = []
    for b in reversed(beats):
        if b.t <= t_end - WINDOW_S:
            break
        bs.append(b)
    bs.reverse()
    f = [0.0] * len(FEATURES)
    f[0] = float(len(bs))
    if bs:
        pv = [b.p_v for b in bs]
        f[3], f[4], f[5] = sum(pv) / len(pv), min(pv), max(pv)
        f[6] = sum(1 for v in pv if v >= 0.5) / len(pv)
        f[7] = _median([b.rel_w for b in bs])
        f[8] = _median([b.width_ms for b in bs])
        f[9] = _median([b.corr for b in bs])
        pc = [b.prev_corr for b in bs]
        f[10], f[11] = _median(pc), min(pc)
        f[12] = _median([b.amp_ratio for b in bs])
    if len(bs) >= 3:
        rr = [b2.t - b1.t for b1, b2 in zip(bs, bs[1:])]
        med = _median(rr)
        mean = sum(rr) / len(rr)
        if med > 0 and mean > 0:
            f[1] = 60.0 / med
            f[2] = math.sqrt(sum((v - mean) ** 2 for v in rr) / len(rr)) / mean
    dur = sum(d for d, _, _, _ in frames) or 1.0
    f[13] = sum(d for d, good, _, _ in frames if good) / dur
    f[14] = sum(d for d, _, noisy, _ in frames if noisy) / dur
    f[15] = sum(d * q for d, _, _, q in frames) / dur
    if w.size >= 8:
        wz = w - w.mean()
        hann, freqs, body, low, lf, hf, df = _spectrum_plan(wz.size, fs)
        spec = np.abs(np.fft.rfft(wz * hann)) ** 2
        total = float(spec[body[0] : body[1]].sum())
        if total > 0:
            k = low[0] + int(np.argmax(spec[low[0] : low[1]]))
            f[16] = float(freqs[k])
            half = int(0.5 / df)
            f[17] = float(spec[max(0, k - half) : k + half + 1].sum()) / total
            f[18] = float(spec[lf[0] : lf[1]].sum()) / total
            f[19] = float(spec[hf[0] : hf[1]].sum()) / total
        f[20] = vf_leakage(wz)
        f[21] = float(wz.max() - wz.min()) / normal_amp if normal_amp > 0 else 0.0
        var = float(wz @ wz) / wz.size
        if var > 0:
            w2 = wz * wz
            f[22] = float(w2 @ w2) / wz.size / (var * var)
    out = np.array(f)
    out[~np.isfinite(out)] = 0.0
    return out


@dataclass(frozen=True)
class VtWindowModel:
    trees: FlatTrees
    version: str

    def p_vt(self, x: np.ndarray) -> float:
        r = float(self.trees.raw(x)[0])
        return 1.0 / (1.0 + math.exp(-r)) if r > -30 else 0.0

    def save(self, path: Path, meta: dict[str, str]) -> None:
        np.savez_compressed(
            path,
            **self.trees.arrays(),
            version=np.str_(self.version),
            features=np.array(FEATURES),
            meta=np.str_(repr(sorted(meta.items()))),
        )


def read_model(path: Path) -> VtWindowModel:
    with np.load(path, allow_pickle=False) as z:
        if tuple(str(s) for s in z["features"]) != FEATURES:
            raise ValueError(
                f"{path}: model features differ from this code's: retrain it (python scripts/train_vt_window_model.py)"
            )
        return VtWindowModel(FlatTrees.from_arrays(z), str(z["version"]))


@cache
def load() -> VtWindowModel:
    return read_model(MODEL_DIR / f"{MODEL_NAME}.npz")


@cache
def load_fold(k: int) -> VtWindowModel:
    """The model trained without MIT-BIH fold ``k`` (cross-validation only)."""
    return read_model(MODEL_DIR / f"{MODEL_NAME}-without-fold{k}.npz")


class VtWindowDetector:
    """``vt`` after ``RAISE_WINDOWS`` consecutive windows at P(VT) >= ``P_RAISE``, cleared after
    ``CLEAR_WINDOWS`` below; ``vt_sustained`` once held ``SUSTAINED_S``.  Transitions carry
    ``{"window": True}`` so the analyser can merge them with the beat-run detector's."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.start: float | None = None
        self.last_hit: float | None = None
        self.active = False
        self.sustained = False

    def on_window(self, t_end: float, p: float | None, onset: float | None = None) -> list[Transition]:
        """``p`` None: no judgement possible (unusable signal) -- counts as a miss.  ``onset``: the
        first ventricular beat in the window, the start of an episode this window begins (else the
        window's start)."""
        out: list[Transition] = []
        if p is not None and p >= P_RAISE:
            self.misses = 0
            self.hits += 1
            if self.hits == 1 and not self.active:
                self.start = onset if onset is not None else t_end - WINDOW_S
            self.last_hit = t_end
            if not self.active and self.hits >= RAISE_WINDOWS:
                self.active = True
                out.append(Transition("vt", True, float(self.start or t_end), None, {"window": True}))
            if self.active and not self.sustained and self.start is not None and t_end - self.start >= SUSTAINED_S:
                self.sustained = True
                out.append(Transition("vt_sustained", True, self.start, None, {"window": True}))
            return out
        self.hits = 0
        self.misses += 1
        if self.active and self.misses >= CLEAR_WINDOWS:
            out += self.end()
        elif not self.active:
            self.start = None
        return out

    def end(self) -> list[Transition]:
        out: list[Transition] = []
        if self.active:
            start = float(self.start if self.start is not None else 0.0)
            last = float(self.last_hit if self.last_hit is not None else start)
            if self.sustained:
                out.append(Transition("vt_sustained", False, start, last, {"window": True}))
            out.append(Transition("vt", False, start, last, {"window": True}))
        self.hits = self.misses = 0
        self.start = self.last_hit = None
        self.active = self.sustained = False
        return out
