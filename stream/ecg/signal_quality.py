"""Per-second ECG signal quality.

Every frame (about one second) gets a :class:`FrameQuality`:

* ``lead_off`` – the device said so, or samples were missing (NaN);
* ``flat`` – essentially no variation (peak-to-peak below ``FLAT_UV``): a
  disconnected or railed input, never an asystole;
* ``saturated`` – a run of samples stuck at the frame's extreme value, or an
  implausible amplitude (clipping at the ADC rail or an electrode pop);
* ``noisy`` – the QRS band (5–15 Hz) carries energy without ECG structure: its
  mean absolute level is large against the recent QRS peak level, or its
  kurtosis is low while it is not quiet (muscle, motion, mains);
* ``quiet`` – the QRS band stays well below the recent QRS level: a clean
  baseline, which is what a real pause or asystole looks like.

The analyser refines ``noisy`` with two things that need beat morphology: it
clears it when the complexes recur beat to beat at a regular rate (a fast
wide-complex rhythm is busy but organised), and sets it, with ``artefact``,
for steps, broadband high-frequency activity or an amplitude far beyond the
patient's own QRS complexes.

``sqi`` in 0..1 summarises it (0 for lead-off/flat/saturated).  Every rhythm
alarm is gated on it; a bad signal only ever becomes the technical
``lead_off`` condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.ecg import filters

FLAT_UV = 15.0  # peak-to-peak below this over a frame: flat line
SATURATION_SHARE = 0.05  # share of a frame's samples stuck (in runs) on its max or min
IMPLAUSIBLE_UV = 12000.0  # |amplitude| above this (after the DC level is removed) is not ECG
NOISE_LEVEL = 0.22  # mean |QRS band| over the QRS peak level above this: noisy ...
NOISE_FLOOR = 0.10  # ... if the median |QRS band| (the baseline between complexes) is busy too
QUIET_LEVEL = 0.30  # max |QRS band| below this fraction of the QRS peak level: quiet
KURTOSIS_MIN = 4.0  # a frame with a QRS in it has a peaky QRS band


@dataclass(slots=True)
class FrameQuality:
    lead_off: bool = False
    flat: bool = False
    saturated: bool = False
    noisy: bool = False
    quiet: bool = False
    sqi: float = 1.0
    artefact: str | None = None  # "step", "hf" or "amplitude" when non-cardiac content made it noisy

    @property
    def unusable(self) -> bool:
        """No rhythm can be judged from this frame."""
        return self.lead_off or self.flat or self.saturated

    @property
    def good(self) -> bool:
        return not (self.unusable or self.noisy)


def fast_median(a: np.ndarray) -> float:
    """``float(np.median(a))`` of a 1-D float array without NaN: the same arithmetic, less overhead."""
    n = a.size
    k = n // 2
    if n % 2:
        return float(np.partition(a, k)[k])
    p = np.partition(a, (k - 1, k))
    return (float(p[k - 1]) + float(p[k])) / 2


def unusable_kind(x: np.ndarray) -> str | None:
    """ "flat", "saturated" or None for a frame of raw samples (µV).

    Saturation is a run at the frame's extreme value (consecutive equal samples
    at the max or min), so a coarse ADC repeating a peak value now and then is
    not mistaken for clipping.
    """
    hi = float(x.max())
    lo = float(x.min())
    if hi - lo < FLAT_UV:
        return "flat"
    if hi - lo > 2 * IMPLAUSIBLE_UV:
        return "saturated"
    lim = SATURATION_SHARE * len(x)
    at_hi = x == hi
    if np.count_nonzero(at_hi[1:] & at_hi[:-1]) > lim:
        return "saturated"
    at_lo = x == lo
    if np.count_nonzero(at_lo[1:] & at_lo[:-1]) > lim:
        return "saturated"
    return None


def assess_frame(
    x: np.ndarray, bp: np.ndarray, qrs_level: float, *, lead_off: bool, n_beats: int, kind: str | None
) -> FrameQuality:
    """Quality of one frame of raw samples ``x`` (µV) and its QRS-band version ``bp``.

    ``qrs_level`` is the recent median |QRS band| at detected R peaks (0 if unknown),
    ``n_beats`` the number of QRS complexes detected in the frame, ``kind`` what
    ``unusable_kind(x)`` returned (the caller asks first, to skip detection on unusable frames).
    """
    q = FrameQuality(lead_off=lead_off)
    if lead_off or len(x) == 0:
        q.sqi = 0.0
        return q
    if kind == "flat":
        q.flat = True
        q.sqi = 0.0
        return q
    if kind == "saturated":
        q.saturated = True
        q.sqi = 0.0
        return q
    m = len(x)
    abp = np.abs(bp)
    mean_abs = float(abp.sum()) / abp.size
    peak = float(abp.max())
    if qrs_level > 0.0:
        level = mean_abs / qrs_level
        q.quiet = peak < QUIET_LEVEL * qrs_level
    else:
        level = mean_abs / peak if peak > 0 else 0.0
    # frames full of real QRS complexes (a run of wide ventricular beats) have a high mean
    # level but a quiet baseline between them; noise keeps the median level up as well
    noisy = level > NOISE_LEVEL and (qrs_level <= 0.0 or fast_median(abp) > NOISE_FLOOR * qrs_level)
    if not noisy and not q.quiet and n_beats > 0:
        m2 = float(np.dot(bp, bp)) / m
        if m2 > 0.0:
            b2 = bp * bp
            kurt = float(np.dot(b2, b2)) / m / (m2 * m2)
            noisy = kurt < KURTOSIS_MIN and n_beats > 3  # many "beats" without peaky QRS energy
    q.noisy = noisy
    q.sqi = 0.0 if noisy else max(0.0, min(1.0, 1.0 - level / NOISE_LEVEL * 0.5))
    return q


# --- sharp complexes beneath an oscillation (tremor, tooth-brushing) ---------------------------
SPIKE_BAND_HZ = (18.0, 40.0)  # above tremor and fibrillation (3-9 Hz), where a QRS still has energy
SPIKE_K = 15.0  # a spike stands this many times above the band's median level (QRS under
# tremor: ~75; the sharpest edges of flutter and fibrillation: 3-10, rarely 30)
SPIKE_SEP_S = 0.25  # one spike per complex
SPIKE_MIN_GAP_S = 0.30  # QRS complexes at most 200/min
SPIKE_GAP_S = (0.40, 2.0)  # recurring at 30-150/min: a rate fibrillation never has
SPIKE_SPREAD = 1.5  # and steadily (max gap / min gap)


def _spike_filter(fs: float) -> filters.Sections:
    return filters.band_pass(4, SPIKE_BAND_HZ[0], min(SPIKE_BAND_HZ[1], 0.45 * fs), fs)


def sharp_spikes(x: np.ndarray, fs: float) -> list[float]:
    """Times (s from the start of ``x``) of sharp QRS-like spikes in ``x`` (raw µV, a few seconds).

    QRS complexes are narrow: they keep energy in an 18-40 Hz band where tremor and fibrillation
    (3-9 Hz) have little, so there they stand ~60-75x above the band's median level, against 3-10x
    (rarely 30x) for the sharpest edges of ventricular flutter and fibrillation.  Computed only
    when a rhythm alarm is about to be judged (a zero-phase filter over the window: no state).
    """
    if len(x) < int(3 * SPIKE_GAP_S[0] * fs) or fs < 2.2 * SPIKE_BAND_HZ[0]:
        return []
    e = np.abs(filters.sosfiltfilt(_spike_filter(fs), x - x.mean()))
    floor = fast_median(e)
    if not 0.0 < floor < float("inf"):
        return []
    sep = max(1, int(SPIKE_SEP_S * fs))
    e = e.copy()
    found = []
    for _ in range(int(len(x) / fs / SPIKE_SEP_S) + 2):
        k = int(np.argmax(e))
        if e[k] < SPIKE_K * floor:
            break
        found.append(k / fs)
        e[max(0, k - sep) : k + sep + 1] = 0.0
    return sorted(found)


def heart_beats_beneath(x: np.ndarray, fs: float) -> bool:
    """At least 3 sharp QRS complexes, at physiological intervals (>= 0.3 s), regular or not, under
    an oscillation that looks like fibrillation: the heart beats (tremor over sinus rhythm, coarse
    fibrillatory waves of atrial fibrillation); ventricular fibrillation has no QRS complexes."""
    return beats_among(sharp_spikes(x, fs))


def sharp_complex_interval(x: np.ndarray, fs: float) -> float | None:
    """The interval (s) at which sharp QRS complexes recur steadily at 30-150/min in ``x``, or None.

    A large 4-7 Hz oscillation -- Parkinsonian tremor, tooth-brushing, shivering -- has alike
    cycles that look like a run of wide complexes, but the heart's own QRS complexes go on beneath
    it at the patient's steady rate.  One stray spike (the artefact's onset) is allowed.
    """
    return steady_interval(sharp_spikes(x, fs))


def beats_among(spikes: list[float]) -> bool:
    """``heart_beats_beneath`` on spike times already found (``sharp_spikes``)."""
    return len(spikes) >= 3 and min(b - a for a, b in zip(spikes, spikes[1:])) >= SPIKE_MIN_GAP_S


def steady_interval(spikes: list[float]) -> float | None:
    """``sharp_complex_interval`` on spike times already found (``sharp_spikes``)."""
    for drop in [None, *range(len(spikes))] if len(spikes) >= 4 else [None]:
        ts = [k for j, k in enumerate(spikes) if j != drop]
        if len(ts) < 3:
            continue
        gaps = np.diff(ts)
        if gaps.min() >= SPIKE_GAP_S[0] and gaps.max() <= SPIKE_GAP_S[1] and gaps.max() <= SPIKE_SPREAD * gaps.min():
            return float(np.median(gaps))
    return None
