"""Dev ECG records changed the way a held-out set or a real patch would change them.

``variant(record, name)`` returns a copy of an ``ecg-eval`` :class:`Record` with:

* ``fs125`` / ``fs250`` / ``fs500``: resampled (polyphase) to another patch rate,
  annotation sample numbers rescaled;
* ``lead2``: the record's second channel instead of the first ECG lead;
* ``inverted``: the polarity flipped (a patch worn the other way round);
* ``gain0.4`` / ``gain3``: amplitude scaled;
* ``ma6`` / ``ma12`` / ``bw6`` / ``em6`` ...: the Noise Stress Test Database's own noise
  recordings (``ma`` muscle, ``bw`` baseline wander, ``em`` electrode motion) added
  the way that database was built: clean for the first 5 minutes, then noise in
  alternate 2-minute segments, scaled to the given SNR in dB as WFDB's ``nst``
  defines it (``qrs_power``, ``noise_power``).  The ``em``
  recording itself is not in the shared data; its noisy segments are recovered
  from ``118e24`` (MIT-BIH 118 with it added at 24 dB) minus MIT-BIH 118, so
  ``em`` exists only in those segments, which are the ones every variant uses;
* ``native``: unchanged.

Used by ``bench/ecg_generality.py`` and the noise-stress tests.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from stream.ecg import evaluation

NSTDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg" / "nstdb"
NOISE_START_S = 300.0  # nstdb: the first 5 minutes are clean ...
NOISE_SEGMENT_S = 120.0  # ... then noise is on and off in 2-minute segments


def _resample(r: evaluation.Record, fs_new: float) -> evaluation.Record:
    from scipy.signal import resample_poly

    ratio = Fraction(fs_new / r.fs).limit_denominator(100)
    x = resample_poly(r.signal_uv, ratio.numerator, ratio.denominator)
    ann = None
    if r.ann_sample is not None:
        ann = np.round(r.ann_sample * (fs_new / r.fs)).astype(int)
    return replace(r, fs=fs_new, signal_uv=x, ann_sample=ann)


def _second_lead(r: evaluation.Record) -> evaluation.Record:
    import wfdb

    rec = wfdb.rdrecord(r.path)
    ch = 1 if rec.p_signal.shape[1] > 1 else 0
    return replace(r, signal_uv=rec.p_signal[:, ch] * 1000.0, lead=rec.sig_name[ch])


def noise_segment(t: np.ndarray) -> np.ndarray:
    """Which noisy segment of nstdb's schedule each time (s) falls in, 0 for the first; -1 in the
    clean parts (the first 5 minutes, then every other 2-minute segment)."""
    k = np.floor((np.asarray(t, dtype=np.float64) - NOISE_START_S) / NOISE_SEGMENT_S)
    return np.where((k >= 0) & (k % 2 == 0), k // 2, -1).astype(int)


def _noise_on(n: int, fs: float) -> np.ndarray:
    """1.0 where nstdb's schedule has noise on."""
    return (noise_segment(np.arange(n) / fs) >= 0).astype(np.float64)


def qrs_power(r: evaluation.Record) -> float:
    """nst's signal power S (µV²), as WFDB's ``sigamp`` measures it: the peak-to-peak amplitude in
    50 ms either side of each of the first 300 reference QRS complexes (ventricular ones left out,
    so that a record without ``N`` labels, 118's bundle branch block, still has its own), the
    largest and smallest 5 % dropped, the mean of the rest squared and divided by 8."""
    ref_t, ref_s = evaluation.reference_beats(r)
    half = int(round(0.05 * r.fs))
    x = r.signal_uv
    p2p = [
        float(np.ptp(x[max(0, int(round(t * r.fs)) - half) : int(round(t * r.fs)) + half + 1]))
        for t, sym in zip(ref_t, ref_s)
        if sym not in "VEF"
    ][:300]
    return _trimmed_mean(p2p) ** 2 / 8.0


def noise_power(noise: np.ndarray, fs: float) -> float:
    """nst's noise power N (µV²), as ``sigamp`` measures it: the first 300 s cut into 1-s chunks, each
    chunk's RMS about its own mean (so slow wander between chunks does not count), the largest and
    smallest 5 % dropped, the mean of the rest squared."""
    step = int(round(fs))
    chunks = [noise[k : k + step] for k in range(0, min(len(noise), 300 * step) - step + 1, step)]
    return _trimmed_mean([float(np.sqrt(np.mean((c - c.mean()) ** 2))) for c in chunks]) ** 2


def _trimmed_mean(v: list[float]) -> float:
    a = np.sort(np.asarray(v, dtype=np.float64))
    k = int(0.05 * len(a))
    return float(a[k : len(a) - k].mean()) if len(a) > 2 * k else float(a.mean())


@functools.lru_cache(maxsize=1)  # read once per process: every em variant of a bench run adds the same noise
def electrode_motion(nstdb: Path = NSTDB) -> tuple[np.ndarray, float]:
    """nstdb's electrode-motion noise (µV, 360 Hz, first channel) as nst added it to MIT-BIH 118 at
    24 dB, 0 outside the schedule's noisy segments; and 118's signal power S.

    The ``em`` recording is not in the shared data.  ``118e24`` is 118 plus ``a * em + b`` in the
    noisy segments (``b`` an offset nst sets at each segment's start against a step in level, so
    each segment's mean is removed); at another SNR the same noise is scaled by the ratio of the
    two records' S and the SNR difference, which is what nst's gain works out to.
    """
    import wfdb

    mixed = wfdb.rdrecord(str(nstdb / "118e24"), channels=[0]).p_signal[:, 0]
    clean118 = evaluation.read_record(str(nstdb.parent / "mitdb" / "118"))
    n = min(len(mixed), len(clean118.signal_uv))
    d = mixed[:n] * 1000.0 - clean118.signal_uv[:n]
    on = _noise_on(n, 360.0) > 0
    out = np.zeros(n)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], on, [False])).astype(int)))
    for lo, hi in zip(edges[::2], edges[1::2]):
        out[lo:hi] = d[lo:hi] - d[lo:hi].mean()
    return out, qrs_power(clean118)


def _with_noise(r: evaluation.Record, kind: str, snr_db: float, nstdb: Path = NSTDB) -> evaluation.Record:
    """``r`` plus nstdb noise ``kind`` at ``snr_db`` as nst defines the SNR (see ``qrs_power`` and
    ``noise_power``), on nst's standard schedule."""
    import wfdb

    n = len(r.signal_uv)
    on = _noise_on(n, r.fs)
    s_r = qrs_power(r)
    if kind == "em":
        if r.fs != 360.0:
            raise ValueError("the electrode-motion noise is recovered at 360 Hz: add it before resampling")
        em, s_118 = electrode_motion(nstdb)
        noise = np.resize(em, n)
        gain = np.sqrt(s_r / s_118) * 10 ** ((24.0 - snr_db) / 20.0)
    else:
        raw = wfdb.rdrecord(str(nstdb / kind), channels=[0])
        noise = np.resize(raw.p_signal[:, 0] * 1000.0, n)  # same length as the record (nstdb noise is 30 min too)
        gain = np.sqrt(s_r / (10 ** (snr_db / 10.0)) / noise_power(raw.p_signal[:, 0] * 1000.0, raw.fs))
    # as nst's offsets do: the level carries on where the last segment left it (no step in or out)
    added = np.zeros(n)
    edges = np.flatnonzero(np.diff(np.concatenate(([0.0], on, [0.0]))))
    level = 0.0
    for lo, hi in zip(edges[::2], edges[1::2]):
        added[lo:hi] = level + gain * (noise[lo:hi] - noise[lo])
        level = float(added[hi - 1])
        added[hi:] = level
    return replace(r, signal_uv=r.signal_uv + added)


def variant(r: evaluation.Record, name: str) -> evaluation.Record:
    if name == "native":
        return r
    if name.startswith("fs"):
        return _resample(r, float(name[2:]))
    if name == "lead2":
        return _second_lead(r)
    if name == "inverted":
        return replace(r, signal_uv=-r.signal_uv)
    for kind in ("ma", "bw", "em"):
        if name.startswith(kind) and name[len(kind) :].replace(".", "").isdigit():
            return _with_noise(r, kind, float(name[len(kind) :]))
    if name.startswith("gain"):
        return replace(r, signal_uv=r.signal_uv * float(name[4:]))
    raise ValueError(f"unknown variant {name!r}")
