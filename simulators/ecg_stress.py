"""Dev ECG records changed the way a held-out set or a real patch would change them.

``variant(record, name)`` returns a copy of an ``ecg-eval`` :class:`Record` with:

* ``fs125`` / ``fs250`` / ``fs500``: resampled (polyphase) to another patch rate,
  annotation sample numbers rescaled;
* ``lead2``: the record's second channel instead of the first ECG lead;
* ``inverted``: the polarity flipped (a patch worn the other way round);
* ``gain0.4`` / ``gain3``: amplitude scaled;
* ``ma6`` / ``ma12`` / ``bw6`` ...: the Noise Stress Test Database's own noise
  recordings (``ma`` muscle, ``bw`` baseline wander) added the way that database
  was built: clean for the first 5 minutes, then noise in alternate 2-minute
  segments, scaled to the given SNR in dB against the record's QRS amplitude
  (signal power = (median QRS peak-to-peak)² / 8);
* ``native``: unchanged.

Used by ``bench/ecg_generality.py`` and the noise-stress tests.
"""

from __future__ import annotations

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


def _with_noise(r: evaluation.Record, kind: str, snr_db: float, nstdb: Path = NSTDB) -> evaluation.Record:
    import wfdb

    noise = wfdb.rdrecord(str(nstdb / kind)).p_signal[:, 0] * 1000.0
    n = len(r.signal_uv)
    noise = np.resize(noise, n)  # same length as the record (nstdb noise is 30 min too)
    noise = noise - noise.mean()
    ref_t, _ = evaluation.reference_beats(r)
    half = int(0.06 * r.fs)
    p2p = [np.ptp(r.signal_uv[max(0, int(t * r.fs) - half) : int(t * r.fs) + half]) for t in ref_t[:2000]]
    signal_power = float(np.median(p2p)) ** 2 / 8.0
    gain = np.sqrt(signal_power / (10 ** (snr_db / 10.0)) / float(np.mean(noise**2)))
    on = np.zeros(n)
    t = np.arange(n) / r.fs
    on[(t >= NOISE_START_S) & (((t - NOISE_START_S) // NOISE_SEGMENT_S) % 2 == 0)] = 1.0
    return replace(r, signal_uv=r.signal_uv + gain * on * noise)


def variant(r: evaluation.Record, name: str) -> evaluation.Record:
    if name == "native":
        return r
    if name.startswith("fs"):
        return _resample(r, float(name[2:]))
    if name == "lead2":
        return _second_lead(r)
    if name == "inverted":
        return replace(r, signal_uv=-r.signal_uv)
    for kind in ("ma", "bw"):
        if name.startswith(kind) and name[len(kind) :].replace(".", "").isdigit():
            return _with_noise(r, kind, float(name[len(kind) :]))
    if name.startswith("gain"):
        return replace(r, signal_uv=r.signal_uv * float(name[4:]))
    raise ValueError(f"unknown variant {name!r}")
