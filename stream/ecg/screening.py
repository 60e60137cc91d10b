"""AF screening of short single-lead strips: normal, af, other rhythm, or too noisy to read.

A village doctor takes a 30-s strip (a handheld lead-I device or a patch) during a
follow-up visit; the box answers at once.  This is a screening, not an alarm: a
positive is referred, nobody is paged.

How a strip is judged (the approach of the best PhysioNet/CinC 2017 entries:
rhythm, morphology and noise features, then a learned model over them):

* the streaming analyser (:class:`stream.ecg.analyser.EcgAnalyser`) runs over the
  strip as it runs over a patch's stream, so beat detection, the ventricular-beat
  model and frame quality are the ones the monitoring path uses;
* RR irregularity (with premature-beat pairs taken out, so ectopy is not AF),
  Poincaré and successive-difference statistics;
* the average beat: QRS width, how present and how repeatable a P wave is, how
  alike the beats are;
* the spectrum of what is left once the average beat is cancelled from every beat
  (fibrillatory waves sit at 4-10 Hz);
* noise: the analyser's frame quality, high- and low-frequency power, and whether
  a second, simple detector agrees with the analyser's beats;
* gradient-boosted trees (``scripts/train_screening_model.py``, trained on the
  CinC 2017 strips, evaluated out-of-fold by strip) turn those features into
  the four labels; shipped as a small ``.npz`` walked in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from stream.ecg import filters
from stream.ecg.analyser import EcgAnalyser, RhythmAlarm
from stream.ecg.beat_model import FEATURES as BEAT_FEATURES
from stream.ecg.beat_model import BeatModel
from stream.ecg.flat_trees import FlatTrees

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAME = "screen-v5"
LABELS: tuple[str, ...] = ("normal", "af", "other", "noisy")
REFERENCE_CODES = {"N": "normal", "A": "af", "O": "other", "~": "noisy"}  # CinC 2017 REFERENCE.csv
MIN_SECONDS = 5.0  # shorter than this is not a strip anyone can read
# Gates before the model, for what the 2017 strips never show (their device band-limits the signal
# and every one of them has an electrode on the skin), so the model never learnt it:
MAX_UNUSABLE = 0.5  # flat, saturated or lead-off for this share of the strip: unreadable
MIN_BEATS = 3  # fewer beats than this: no rhythm to judge
MAX_HF_RATIO = 0.5  # power above 40 Hz over the 0.7-40 Hz ECG band: muscle or radio noise

TEMPLATE_S = (-0.30, 0.50)  # the average beat's window around R
QRS_S = (-0.10, 0.12)  # the QRS part of it (the analyser's beat window)
P_S = (-0.25, -0.08)  # where the P wave sits before R
PREMATURE = 0.85  # an RR below this share of the median is premature ...
COMPENSATORY = 1.10  # ... and one above this after it, the pause that follows an ectopic beat
IRREGULAR = 0.15  # an RR this far (share) from the median is irregular
AGREE_S = 0.15  # two detectors agree on a beat within this
LOCAL_RR = 8  # RR intervals per window of the local irregularity figures
ODD_CORR = 0.8  # a beat less alike the average beat than this is an odd one
SAMPEN_R = 0.03  # s: the tolerance of the RR sequence's coefficient of sample entropy (Lake & Moorman)
RR_HIST_BIN = 0.02  # s: the RR histogram's bin

_COL = {name: i for i, name in enumerate(BEAT_FEATURES)}

FEATURES: tuple[str, ...] = (
    "seconds",
    "beats_per_10s",
    "hr_median",
    "hr_p10",
    "hr_p90",
    "rr_cv",
    "rr_cv_clean",
    "rmssd_rel",
    "pnn50",
    "irregular_frac",
    "irregular_frac_clean",
    "sd1_sd2",
    "turning_points",
    "alternation",
    "drr_entropy",
    "lorenz_bins",
    "rr_min_rel",
    "rr_max_rel",
    "rr_max_s",
    "premature_frac",
    "local_cv_p25",
    "local_cv_p50",
    "local_cv_p90",
    "local_irregular_frac",
    "local_drr_p50",
    "second_rr_cv",
    "second_irregular_frac",
    "second_beats_per_10s",
    "af_frac",
    "vt_seen",
    "pause_seen",
    "longest_gap_s",
    "v_frac",
    "beat_corr_median",
    "beat_corr_p10",
    "beat_width_ms",
    "beat_rel_width_p90",
    "qrs_width_ms",
    "qrs_amp_mv",
    "template_corr_mean",
    "template_corr_p10",
    "p_ratio",
    "p_coherence",
    "p_present_frac",
    "pr_ms",
    "p_snr",
    "odd_beat_frac",
    "residual_fwave_share",
    "residual_dominant_hz",
    "residual_entropy",
    "residual_rms_rel",
    "good_frac",
    "unusable_frac",
    "noisy_frac",
    "sqi_mean",
    "hf_ratio",
    "lf_ratio",
    "excursion_rel",
    "kurtosis",
    "detector_f1",
    "nonfinite_frac",
    "rr_sampen",
    "rr_cosen",
    "rr_hist_entropy",
)


@dataclass(frozen=True)
class ScreenResult:
    label: str  # "normal" | "af" | "other" | "noisy"
    confidence: float  # that label's probability at the model's operating point (weighted, renormalised)
    probabilities: dict[str, float]
    seconds: float
    hr_bpm: float | None
    beats: int


@dataclass(frozen=True)
class ScreeningModel:
    trees: FlatTrees
    version: str
    # The operating point: each label's probability is multiplied by its weight (``LABELS`` order)
    # before the largest is taken.  Chosen by the training script on out-of-fold probabilities, for
    # the screening's two safety bars (an AF strip called normal, a noisy strip read as normal or AF).
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        raw = self.trees.raw(x)
        e = np.exp(raw - raw.max())
        return e / e.sum()

    def save(self, path: Path, meta: dict[str, str]) -> None:
        np.savez_compressed(
            path,
            **self.trees.arrays(),
            version=np.str_(self.version),
            features=np.array(FEATURES),
            labels=np.array(LABELS),
            decision_weights=np.array(self.weights, dtype=np.float64),
            meta=np.str_(repr(sorted(meta.items()))),
        )


def read_model(path: Path) -> ScreeningModel:
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(s) for s in z["features"])
        if names != FEATURES or tuple(str(s) for s in z["labels"]) != LABELS:
            raise ValueError(
                f"{path}: model features/labels differ from this code's: retrain it "
                "(python scripts/train_screening_model.py)"
            )
        if "decision_weights" not in z:
            raise ValueError(f"{path}: model has no operating point (decision_weights): retrain it")
        weights = tuple(float(w) for w in z["decision_weights"])
        return ScreeningModel(FlatTrees.from_arrays(z), str(z["version"]), weights)


@cache
def load_model() -> ScreeningModel:
    """The shipped screening model (trained on every shared CinC 2017 strip)."""
    return read_model(MODEL_DIR / f"{MODEL_NAME}.npz")


# ------------------------------------------------------------------ features
def _quantile(a: np.ndarray, q: float, default: float) -> float:
    return float(np.quantile(a, q)) if a.size else default


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / d if d > 0 else 0.0


def _rr_features(t: np.ndarray, seconds: float) -> dict[str, float]:
    f = {"beats_per_10s": 10.0 * t.size / seconds if seconds > 0 else 0.0}
    rr = np.diff(t)
    rr = rr[rr > 0]
    if rr.size < 3:
        f.update(
            hr_median=0.0,
            hr_p10=0.0,
            hr_p90=0.0,
            rr_cv=0.0,
            rr_cv_clean=0.0,
            rmssd_rel=0.0,
            pnn50=0.0,
            irregular_frac=0.0,
            irregular_frac_clean=0.0,
            sd1_sd2=0.0,
            turning_points=0.0,
            alternation=0.0,
            drr_entropy=0.0,
            lorenz_bins=0.0,
            rr_min_rel=0.0,
            rr_max_rel=0.0,
            rr_max_s=float(rr.max()) if rr.size else seconds,
            premature_frac=0.0,
        )
        return f
    med = float(np.median(rr))
    mean = float(rr.mean())
    f["hr_median"] = 60.0 / med
    f["hr_p10"] = 60.0 / float(np.quantile(rr, 0.9))
    f["hr_p90"] = 60.0 / float(np.quantile(rr, 0.1))
    f["rr_cv"] = float(rr.std()) / mean
    # a premature beat and the pause after it: ectopy, which is not the irregularity of AF
    premature = (rr[:-1] < PREMATURE * med) & (rr[1:] > COMPENSATORY * med)
    drop = np.zeros(rr.size, dtype=bool)
    drop[:-1] |= premature
    drop[1:] |= premature
    clean = rr[~drop] if (~drop).sum() >= 3 else rr
    f["rr_cv_clean"] = float(clean.std()) / float(clean.mean())
    f["premature_frac"] = float(premature.sum()) / rr.size
    f["irregular_frac"] = float(np.mean(np.abs(rr - med) > IRREGULAR * med))
    cmed = float(np.median(clean))
    f["irregular_frac_clean"] = float(np.mean(np.abs(clean - cmed) > IRREGULAR * cmed))
    drr = np.diff(rr)
    f["rmssd_rel"] = math.sqrt(float(np.mean(drr**2))) / mean
    f["pnn50"] = float(np.mean(np.abs(drr) > 0.05))
    sd1 = float(np.std(drr)) / math.sqrt(2.0)
    sd2 = math.sqrt(max(2.0 * float(rr.var()) - sd1**2, 1e-12))
    f["sd1_sd2"] = sd1 / sd2
    if drr.size >= 2:
        prod = drr[:-1] * drr[1:]
        f["turning_points"] = float(np.mean(prod < 0))
        f["alternation"] = float(np.mean(prod < -((0.1 * med) ** 2)))
        bins = np.floor(drr / 0.04).astype(int)
        f["lorenz_bins"] = len(set(zip(bins[:-1].tolist(), bins[1:].tolist()))) / (drr.size - 1)
    else:
        f["turning_points"] = f["alternation"] = f["lorenz_bins"] = 0.0
    hist = np.bincount(np.clip(np.floor(drr / 0.02).astype(int) + 50, 0, 100)).astype(float)
    p = hist[hist > 0] / hist.sum()
    f["drr_entropy"] = float(-(p * np.log2(p)).sum())
    f["rr_min_rel"] = float(rr.min()) / med
    f["rr_max_rel"] = float(rr.max()) / med
    f["rr_max_s"] = float(rr.max())
    return f


def _sampen(rr: np.ndarray, m: int, r: float) -> float:
    """Sample entropy of a short sequence: -ln(matches of m + 1 / matches of m), Chebyshev distance
    within ``r``; with no match it takes its largest possible value, ln of the pairs compared."""
    n = rr.size
    if n < m + 3 or r <= 0:
        return 0.0

    def matches(k: int) -> int:
        w = np.lib.stride_tricks.sliding_window_view(rr, k)[: n - m]
        d = np.abs(w[:, None, :] - w[None, :, :]).max(axis=2)
        return int(np.triu(d <= r, 1).sum())

    b, a = matches(m), matches(m + 1)
    if a == 0 or b == 0:
        return math.log((n - m) * (n - m - 1) / 2.0)
    return -math.log(a / b)


def _rr_entropy_features(t: np.ndarray) -> dict[str, float]:
    """How unpredictable the RR sequence is: sample entropy (m 2, r 0.2 SD), the coefficient of
    sample entropy (m 1, r 30 ms, less the log of the mean RR: Lake & Moorman's AF detector for
    short records) and the entropy of the RR histogram (20-ms bins).  AF is irregular without a
    pattern; ectopy and sinus arrhythmia repeat their RRs."""
    rr = np.diff(t)
    rr = rr[rr > 0]
    if rr.size < 3:
        return {"rr_sampen": 0.0, "rr_cosen": 0.0, "rr_hist_entropy": 0.0}
    hist = np.bincount(np.clip((rr / RR_HIST_BIN).astype(int), 0, 150)).astype(float)
    p = hist[hist > 0] / hist.sum()
    return {
        "rr_sampen": _sampen(rr, 2, 0.2 * float(rr.std())),
        "rr_cosen": _sampen(rr, 1, SAMPEN_R) + math.log(2.0 * SAMPEN_R) - math.log(float(rr.mean())),
        "rr_hist_entropy": float(-(p * np.log2(p)).sum()),
    }


def _local_features(t: np.ndarray) -> dict[str, float]:
    """Irregularity in windows of ``LOCAL_RR`` intervals: AF over part of a strip, or a few ectopic
    beats in a regular one, show here where whole-strip figures average them away."""
    rr = np.diff(t)
    rr = rr[rr > 0]
    if rr.size < LOCAL_RR:
        return dict.fromkeys(
            ("local_cv_p25", "local_cv_p50", "local_cv_p90", "local_irregular_frac", "local_drr_p50"), 0.0
        )
    win = np.lib.stride_tricks.sliding_window_view(rr, LOCAL_RR)
    cv = win.std(axis=1) / win.mean(axis=1)
    drr = np.abs(np.diff(win, axis=1)).mean(axis=1) / win.mean(axis=1)
    return {
        "local_cv_p25": float(np.quantile(cv, 0.25)),
        "local_cv_p50": float(np.median(cv)),
        "local_cv_p90": float(np.quantile(cv, 0.9)),
        "local_irregular_frac": float(np.mean(cv > 0.1)),
        "local_drr_p50": float(np.median(drr)),
    }


def _beat_model_features(log: list[tuple[float, np.ndarray]], cls: list[str]) -> dict[str, float]:
    f = {"v_frac": cls.count("V") / len(cls) if cls else 0.0}
    if not log:
        f.update(beat_corr_median=0.0, beat_corr_p10=0.0, beat_width_ms=0.0, beat_rel_width_p90=0.0)
        return f
    x = np.array([v for _, v in log])
    f["beat_corr_median"] = float(np.median(x[:, _COL["corr"]]))
    f["beat_corr_p10"] = float(np.quantile(x[:, _COL["corr"]], 0.1))
    f["beat_width_ms"] = float(np.median(x[:, _COL["width_ms"]]))
    f["beat_rel_width_p90"] = float(np.quantile(x[:, _COL["rel_width"]], 0.9))
    return f


def _morphology_features(y: np.ndarray, fs: float, r: np.ndarray) -> dict[str, float]:
    f = dict.fromkeys(
        (
            "qrs_width_ms",
            "qrs_amp_mv",
            "template_corr_mean",
            "template_corr_p10",
            "p_ratio",
            "p_coherence",
            "p_present_frac",
            "pr_ms",
            "p_snr",
            "odd_beat_frac",
            "residual_fwave_share",
            "residual_dominant_hz",
            "residual_entropy",
            "residual_rms_rel",
        ),
        0.0,
    )
    a, b = int(round(TEMPLATE_S[0] * fs)), int(round(TEMPLATE_S[1] * fs))
    inside = r[(r + a >= 0) & (r + b < y.size)]
    if inside.size < 3:
        return f
    segs = np.stack([y[i + a : i + b] for i in inside])
    template = np.median(segs, axis=0)
    q0, q1 = int(round((QRS_S[0] - TEMPLATE_S[0]) * fs)), int(round((QRS_S[1] - TEMPLATE_S[0]) * fs))
    qrs = template[q0:q1] - np.linspace(template[q0], template[q1 - 1], q1 - q0)
    amp = float(qrs.max() - qrs.min())
    f["qrs_amp_mv"] = amp / 1000.0
    if amp <= 0:
        return f
    f["qrs_width_ms"] = 1000.0 * float(np.abs(qrs).sum()) / fs / float(np.abs(qrs).max())
    corrs = np.array([_corr(s[q0:q1], template[q0:q1]) for s in segs])
    f["template_corr_mean"] = float(corrs.mean())
    f["template_corr_p10"] = float(np.quantile(corrs, 0.1))
    p0, p1 = int(round((P_S[0] - TEMPLATE_S[0]) * fs)), int(round((P_S[1] - TEMPLATE_S[0]) * fs))

    def detrended(w: np.ndarray) -> np.ndarray:
        return w - np.linspace(w[0], w[-1], w.size)

    pt = detrended(template[p0:p1])
    f["p_ratio"] = float(pt.max() - pt.min()) / amp
    pc = np.array([_corr(detrended(s[p0:p1]), pt) for s in segs])
    f["p_coherence"] = float(pc.mean())
    f["p_present_frac"] = float(np.mean(pc > 0.5))
    f["pr_ms"] = -1000.0 * (P_S[0] + float(np.argmax(np.abs(pt))) / fs)  # the P wave's peak, before R
    f["odd_beat_frac"] = float(np.mean(corrs < ODD_CORR))
    # QRST cancellation: each beat's share of the signal (up to the midpoints to its neighbours)
    # minus the average beat leaves what is not the repeated complex -- fibrillatory waves, or
    # little more than noise in sinus rhythm
    resid = y.copy()
    mids = np.concatenate([[0], (inside[:-1] + inside[1:]) // 2, [y.size]])
    for k, i in enumerate(inside):
        u, v = max(i + a, mids[k]), min(i + b, mids[k + 1])
        if v > u:
            resid[u:v] -= template[u - i - a : v - i - a]
    first, last = int(inside[0] + a), int(inside[-1] + b)
    res = resid[first:last]
    if res.size >= fs:
        freqs, power = _welch(res, fs, min(res.size, int(2 * fs)))
        band = (freqs >= 1.0) & (freqs <= 40.0)
        pb = power[band]
        if pb.sum() > 0:
            f["residual_fwave_share"] = float(power[(freqs >= 4.0) & (freqs <= 10.0)].sum() / pb.sum())
            sub = (freqs >= 3.0) & (freqs <= 12.0)
            f["residual_dominant_hz"] = float(freqs[sub][np.argmax(power[sub])])
            p = pb / pb.sum()
            p = p[p > 0]
            f["residual_entropy"] = float(-(p * np.log(p)).sum() / math.log(pb.size))
        f["residual_rms_rel"] = float(res.std()) / amp
        if f["residual_rms_rel"] > 0:
            f["p_snr"] = f["p_ratio"] / f["residual_rms_rel"]
    return f


def _second_detector(y: np.ndarray, fs: float) -> np.ndarray:
    """A plain energy detector (squared slope, 80-ms integration, fixed share of the strip's peak):
    where it and the analyser disagree, the strip is hard to read."""
    e = np.convolve(np.diff(y) ** 2, np.ones(max(1, int(0.08 * fs))), mode="same")
    if e.size == 0:
        return np.zeros(0)
    peaks = _find_peaks(e, 0.3 * float(np.quantile(e, 0.98)), max(1, int(0.25 * fs)))
    return peaks / fs


def _welch(x: np.ndarray, fs: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch's power spectral density with SciPy's defaults (periodic Hann window, half overlap,
    each segment's mean removed, one-sided density): ``scipy.signal.welch(x, fs, nperseg=nperseg)``."""
    step = nperseg - nperseg // 2
    count = (x.size - nperseg // 2) // step
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(nperseg) / nperseg)
    segs = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::step][:count]
    segs = (segs - segs.mean(axis=1, keepdims=True)) * win
    spec = np.abs(np.fft.rfft(segs, axis=1)) ** 2 / (fs * float((win * win).sum()))
    spec[:, 1 : -1 if nperseg % 2 == 0 else None] *= 2.0  # one-sided: all but DC (and Nyquist) doubled
    return np.fft.rfftfreq(nperseg, 1.0 / fs), spec.mean(axis=0)


def _find_peaks(x: np.ndarray, height: float, distance: int) -> np.ndarray:
    """Local maxima (a flat top counts once, at its middle) at least ``height`` high, then thinned
    highest first so none is closer than ``distance`` samples to a higher one kept:
    ``scipy.signal.find_peaks(x, height=height, distance=distance)[0]``."""
    if x.size < 3:
        return np.zeros(0, dtype=np.intp)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))  # runs of equal samples
    ends = np.concatenate((starts[1:] - 1, [x.size - 1]))
    inner = (starts > 0) & (ends < x.size - 1)
    starts, ends = starts[inner], ends[inner]
    top = (x[starts - 1] < x[starts]) & (x[ends + 1] < x[ends])
    peaks = (starts[top] + ends[top]) // 2
    peaks = peaks[x[peaks] >= height]
    keep = np.ones(peaks.size, dtype=bool)
    for j in np.argsort(x[peaks])[::-1]:
        if not keep[j]:
            continue
        k = j - 1
        while k >= 0 and peaks[j] - peaks[k] < distance:
            keep[k] = False
            k -= 1
        k = j + 1
        while k < peaks.size and peaks[k] - peaks[j] < distance:
            keep[k] = False
            k += 1
    return peaks[keep]


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 or b.size == 0:
        return 0.0
    j = np.clip(np.searchsorted(b, a), 1, b.size - 1) if b.size > 1 else np.zeros(a.size, dtype=int)
    near = np.minimum(np.abs(b[j] - a), np.abs(b[np.maximum(j - 1, 0)] - a))
    hits = float(np.sum(near <= AGREE_S))
    return 2.0 * hits / (a.size + b.size)


def _noise_features(
    x: np.ndarray, y: np.ndarray, fs: float, frames: list, t: np.ndarray, qrs_amp_uv: float
) -> dict[str, float]:
    f: dict[str, float] = {}
    dur = sum(d for d, _ in frames) or 1.0
    f["good_frac"] = sum(d for d, q in frames if q.good) / dur
    f["unusable_frac"] = sum(d for d, q in frames if q.unusable) / dur
    f["noisy_frac"] = sum(d for d, q in frames if q.noisy) / dur
    f["sqi_mean"] = sum(d * q.sqi for d, q in frames) / dur
    spec = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / fs)
    body = spec[(freqs >= 0.7) & (freqs <= 40.0)].sum()
    f["hf_ratio"] = float(spec[(freqs > 40.0) & (freqs < 0.5 * fs)].sum() / body) if body > 0 else 0.0
    f["lf_ratio"] = float(spec[(freqs > 0.0) & (freqs < 0.7)].sum() / body) if body > 0 else 0.0
    spread = float(np.quantile(y, 0.995) - np.quantile(y, 0.005))
    f["excursion_rel"] = spread / qrs_amp_uv if qrs_amp_uv > 0 else 0.0
    sd = float(y.std())
    f["kurtosis"] = float(np.mean(((y - y.mean()) / sd) ** 4)) if sd > 0 else 0.0
    second = _second_detector(y, fs)
    f["detector_f1"] = _agreement(t, second)
    rr = np.diff(second)
    f["second_beats_per_10s"] = 10.0 * second.size * fs / y.size if y.size else 0.0
    if rr.size >= 3:
        med = float(np.median(rr))
        f["second_rr_cv"] = float(rr.std() / rr.mean())
        f["second_irregular_frac"] = float(np.mean(np.abs(rr - med) > IRREGULAR * med))
    else:
        f["second_rr_cv"] = f["second_irregular_frac"] = 0.0
    return f


def _alarm_features(alarms: list[RhythmAlarm], seconds: float) -> dict[str, float]:
    """What the streaming detectors said over the strip (they need time, so AF raised late in a
    short strip covers only its tail)."""
    af = 0.0
    opened: dict[str, float] = {}
    seen: set[str] = set()
    for a in alarms:
        seen.add(a.condition)
        if a.active:
            opened.setdefault(a.condition, a.start_s)
        elif a.condition in opened:
            start = opened.pop(a.condition)
            if a.condition == "af":
                af += (a.end_s if a.end_s is not None else seconds) - start
    if "af" in opened:
        af += seconds - opened["af"]
    return {
        "af_frac": af / seconds if seconds > 0 else 0.0,
        "vt_seen": float(bool(seen & {"vt", "vt_sustained"})),
        "pause_seen": float(bool(seen & {"pause", "asystole"})),
    }


def strip_features(
    x_uv: np.ndarray, fs: float, beat_model: BeatModel | None | str = "shipped"
) -> tuple[np.ndarray, float | None, int]:
    """(feature vector in ``FEATURES`` order, median heart rate bpm or None, beats detected)."""
    x = np.asarray(x_uv, dtype=np.float64)
    finite = np.isfinite(x)
    nonfinite = 1.0 - float(finite.mean()) if x.size else 1.0
    x = np.where(finite, x, 0.0)
    seconds = x.size / fs
    an = EcgAnalyser(fs, beat_model=beat_model, af_confirm=False)
    an.feature_log = []
    an.frame_log = []
    an.centre_log = []
    step = max(1, int(round(fs)))
    alarms: list[RhythmAlarm] = []
    for k in range(0, x.size, step):
        alarms += an.push(x[k : k + step], t0_s=k / fs)
    alarms += an.flush()
    beats = an.beats
    t = np.array([b[0] for b in beats])
    cls = [b[1] for b in beats]
    band = filters.band_pass(2, 0.5, min(40.0, 0.45 * fs), fs)
    y = filters.sosfiltfilt(band, x) if x.size > filters.filtfilt_padding(band) else x - x.mean()
    r = np.round(t * fs).astype(int)
    f: dict[str, float] = {"seconds": seconds, "nonfinite_frac": nonfinite}
    tc = np.array(an.centre_log) if len(an.centre_log) == len(t) else t
    f.update(_rr_features(tc, seconds))
    f.update(_local_features(tc))
    f.update(_rr_entropy_features(tc))
    f.update(_alarm_features(alarms, seconds))
    gaps = np.diff(np.concatenate([[0.0], t, [seconds]]))
    f["longest_gap_s"] = float(gaps.max())
    f.update(_beat_model_features(an.feature_log, cls))
    f.update(_morphology_features(y, fs, r))
    f.update(_noise_features(x, y, fs, an.frame_log, t, 1000.0 * f["qrs_amp_mv"]))
    vec = np.array([f[name] for name in FEATURES], dtype=np.float64)
    vec[~np.isfinite(vec)] = 0.0
    hr = f["hr_median"] if f["hr_median"] > 0 else None
    return vec, hr, len(beats)


def screen(x_uv: np.ndarray, fs: float, model: ScreeningModel | None = None) -> ScreenResult:
    """Classify one strip (µV at ``fs`` Hz)."""
    if not 100.0 <= fs <= 1000.0:
        raise ValueError(f"unsupported ECG sampling rate {fs} Hz (expected 125-500)")
    seconds = len(x_uv) / fs
    if seconds < MIN_SECONDS:
        return ScreenResult("noisy", 1.0, {"noisy": 1.0}, seconds, None, 0)
    vec, hr, n = strip_features(x_uv, fs)
    m = model or load_model()
    p = m.probabilities(vec)
    label, confidence = decide(vec, p, m.weights)
    probs = {lab: round(float(v), 4) for lab, v in zip(LABELS, p)}
    return ScreenResult(label, confidence, probs, seconds, round(hr) if hr else None, n)


def af_probability(x_uv: np.ndarray, fs: float) -> float:
    """The model's P(af) for a strip, without the gates (the streaming analyser's second opinion)."""
    vec, _, _ = strip_features(x_uv, fs)
    return float(load_model().probabilities(vec)[LABELS.index("af")])


def gated(vec: np.ndarray) -> bool:
    """The strip fails a gate before the model (unusable, too few beats, high-frequency noise)."""
    col = FEATURES.index
    beats = vec[col("beats_per_10s")] * vec[col("seconds")] / 10.0
    return bool(
        vec[col("unusable_frac")] >= MAX_UNUSABLE or beats < MIN_BEATS - 0.5 or vec[col("hf_ratio")] > MAX_HF_RATIO
    )


def decide(vec: np.ndarray, p: np.ndarray, weights: tuple[float, ...] | None = None) -> tuple[str, float]:
    """The label and its confidence from a strip's features, the model's probabilities and its
    operating point.  The confidence is the label's share of the weighted probabilities: a strip
    read as noisy because its small P(noisy) outweighs the rest does not show "confidence 3 %"."""
    if gated(vec):
        return "noisy", 1.0
    q = p if weights is None else p * np.asarray(weights)
    k = int(np.argmax(q))
    return LABELS[k], float(q[k] / q.sum())
