"""Synthetic single-lead ECG, streamed one frame at a time, with injectable rhythms.

Beats are sums of Gaussian waves (P, Q, R, S, T) placed on an RR sequence that
the rhythm chooses: sinus (small variability), AF (irregularly irregular RR,
no P wave, fibrillatory baseline), VT (wide fast complexes), asystole (no
QRS). Amplitudes in µV. Good enough to drive the pipeline; the accuracy of
the analyser is measured on real PhysioNet records, never on this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (offset from R in s, width in s, amplitude in µV) for each wave.
_NORMAL = [
    (-0.20, 0.025, 120.0),
    (-0.03, 0.010, -120.0),
    (0.0, 0.012, 1100.0),
    (0.03, 0.010, -250.0),
    (0.25, 0.045, 280.0),
]
_NO_P = _NORMAL[1:]
_VENTRICULAR = [(0.0, 0.03, 1400.0), (0.06, 0.025, -600.0), (0.19, 0.035, -300.0)]

RHYTHMS = ("sinus", "af", "vt", "asystole", "brady", "tachy", "pause")
ARTEFACTS = ("motion", "electrode_pop", "saturation", "baseline_wander", "flat")
FULL_SCALE_UV = 5000.0  # a typical patch front end saturates near ±5 mV


@dataclass
class _Beat:
    t: float
    waves: list[tuple[float, float, float]]


class EcgSynth:
    def __init__(self, fs: int = 250, seed: int = 0, hr_bpm: float = 72.0) -> None:
        self.fs = fs
        self.rng = np.random.default_rng(seed)
        self.hr = hr_bpm
        self.rhythm = "sinus"
        self.t = 0.0  # start of the next frame, s
        self._next_beat = 0.5
        self._beats: list[_Beat] = []
        self.pvc_fraction = 0.0
        self._pvc_next = False
        self.artefact: str | None = None
        self._pause_s = 0.0
        self.vt_hr: float | None = None
        self.vt_waves = _VENTRICULAR  # the VT complex (``widened_normal`` gives one of the normal shape)

    def _rr_and_waves(self) -> tuple[float, list[tuple[float, float, float]]] | None:
        r = self.rhythm
        if r == "asystole":
            return None
        if r == "af":
            rr = float(np.clip(self.rng.gamma(9.0, (60.0 / self.hr) / 9.0), 0.3, 2.0))
            return rr, _NO_P
        if r == "vt":
            # a slow VT (100-150/min) only when asked for by rate; 150/min otherwise
            return 60.0 / (self.vt_hr or max(self.hr, 150.0)) * float(self.rng.normal(1.0, 0.01)), self.vt_waves
        if r == "pause" and self._pause_s > 0:
            rr, self._pause_s = self._pause_s, 0.0  # one long RR, then sinus again
            self.rhythm = "sinus"
            return rr, _NORMAL
        hr = {"brady": min(self.hr, 36.0), "tachy": max(self.hr, 125.0)}.get(r, self.hr)
        rr = 60.0 / hr * float(self.rng.normal(1.0, 0.02))
        if rr < 0.75:
            # Fast rates shorten PR and QT (Bazett-like), so P and T do not run into the next beat.
            k = (rr / 0.75) ** 0.5
            return rr, [
                (off * k if abs(off) > 0.1 else off, w * (k if abs(off) > 0.1 else 1.0), amp) for off, w, amp in _NORMAL
            ]
        if self._pvc_next:
            # This beat is the PVC, placed early by the short interval before it; a full
            # compensatory pause follows (the two intervals add up to two normal ones).
            self._pvc_next = False
            return 1.4 * rr, _VENTRICULAR
        if self.pvc_fraction and self.rng.random() < self.pvc_fraction:
            self._pvc_next = True
            return 0.6 * rr, _NORMAL
        return rr, _NORMAL

    def frame(self, seconds: float = 1.0, *, noise_uv: float = 15.0) -> np.ndarray:
        """The next `seconds` of signal, µV, continuous with the previous frame."""
        n = int(round(seconds * self.fs))
        t = self.t + np.arange(n) / self.fs
        end = self.t + seconds
        while self._next_beat < end + 0.5:
            step = self._rr_and_waves()
            if step is None:
                self._next_beat = end + 0.5  # no beats while in asystole
                break
            rr, waves = step
            self._beats.append(_Beat(self._next_beat, waves))
            self._next_beat += rr
        x = np.zeros(n)
        for b in self._beats:
            for off, width, amp in b.waves:
                c = b.t + off
                if c < self.t - 0.5 or c > end + 0.5:
                    continue
                x += amp * np.exp(-0.5 * ((t - c) / width) ** 2)
        self._beats = [b for b in self._beats if b.t > end - 1.0]
        if self.rhythm == "af":
            x += 40.0 * np.sin(2 * np.pi * 6.3 * t + self.rng.uniform(0, 0.3))
        x += 60.0 * np.sin(2 * np.pi * 0.25 * t)  # breathing baseline wander
        x += self.rng.normal(0.0, noise_uv, n)
        x = self._artefact(x, t)
        self.t = end
        return np.round(np.clip(x, -FULL_SCALE_UV, FULL_SCALE_UV))

    def _artefact(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        a = self.artefact
        if a is None:
            return x
        if a == "motion":  # walking: large, spiky, 1-3 Hz, mimics fast wide complexes
            return (
                x
                + 900 * np.sin(2 * np.pi * 2.2 * t) * self.rng.normal(1.0, 0.4, x.size)
                + self.rng.normal(0, 250, x.size)
            )
        if a == "baseline_wander":
            return x + 1500 * np.sin(2 * np.pi * 0.4 * t)
        if a == "electrode_pop":  # a step and slow recovery a couple of times a second
            y = x.copy()
            for k in self.rng.integers(0, x.size, 2):
                y[k:] += 3000 * np.exp(-(t[k:] - t[k]) / 0.15)
            return y
        if a == "saturation":
            return np.full_like(x, FULL_SCALE_UV)
        if a == "flat":
            return np.zeros_like(x)
        return x

    def set_artefact(self, artefact: str | None) -> None:
        if artefact is not None and artefact not in ARTEFACTS:
            raise ValueError(f"unknown artefact {artefact!r}; use one of {', '.join(ARTEFACTS)}")
        self.artefact = artefact

    def set_rhythm(
        self, rhythm: str, hr_bpm: float | None = None, *, pvc_fraction: float = 0.0, pause_s: float = 4.0
    ) -> None:
        self.pvc_fraction = pvc_fraction
        if rhythm == "pause":
            self._pause_s = pause_s
        if rhythm not in RHYTHMS:
            raise ValueError(f"unknown rhythm {rhythm!r}; use one of {', '.join(RHYTHMS)}")
        if rhythm == "asystole" or self.rhythm == "asystole":
            self._next_beat = max(self._next_beat, self.t)
        self.rhythm = rhythm
        if hr_bpm is not None:
            self.hr = hr_bpm
        self.vt_hr = max(hr_bpm, 100.0) if rhythm == "vt" and hr_bpm is not None else None
        if rhythm != "asystole" and self._next_beat > self.t + 2:
            self._next_beat = self.t + 0.3


def widened_normal(factor: float) -> list[tuple[float, float, float]]:
    """The normal QRS stretched in time by ``factor`` (no P wave, the T wave discordant): a ventricular
    complex that keeps the normal complex's shape, as one from a focus near the conduction system does."""
    return [(off * factor, w * factor, amp) for off, w, amp in _NO_P[:3]] + [(0.25, 0.045, -280.0)]


def waves_per_beat(
    fs: float,
    seconds: float,
    waves: list[tuple[float, float, float]],
    *,
    hr_bpm: float = 72.0,
    noise_uv: float = 5.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole record at once: the same Gaussian ``waves`` (offset s, width s, µV) on every beat of
    a regular rhythm, plus white noise.  For shapes the streaming generator does not make (tall T
    waves, other QRS shapes) in benches and tests; returns (samples µV, beat times s)."""
    n = int(seconds * fs)
    t = np.arange(n) / fs
    x = np.random.default_rng(seed).normal(0.0, noise_uv, n)
    beats = np.arange(0.5, seconds - 0.3, 60.0 / hr_bpm)
    for b in beats:
        for c, w, a in waves:
            lo, hi = int(max(0, (b + c - 5 * w) * fs)), int(min(n, (b + c + 5 * w) * fs))
            if hi > lo:
                x[lo:hi] += a * np.exp(-0.5 * ((t[lo:hi] - b - c) / w) ** 2)
    return x, beats


def tall_t_waves(qrs_uv: float, t_uv: float, t_sigma_s: float) -> list[tuple[float, float, float]]:
    """A small QRS with a T wave of its own size and width (chest leads, hyperkalaemia)."""
    return [
        (-0.16, 0.025, 120.0),
        (-0.02, 0.008, -0.125 * qrs_uv),
        (0.0, 0.010, qrs_uv),
        (0.025, 0.010, -0.25 * qrs_uv),
        (0.27, t_sigma_s, t_uv),
    ]


SINUS_WAVES = [
    (-0.16, 0.025, 120.0),
    (-0.02, 0.008, -150.0),
    (0.0, 0.010, 1200.0),
    (0.025, 0.010, -300.0),
    (0.25, 0.05, 300.0),
]


def tremor_over_sinus(
    fs: float,
    tremor_hz: float,
    tremor_uv: float,
    *,
    seconds: float = 240.0,
    on_s: tuple[float, float] = (60.0, 180.0),
    seed: int = 0,
) -> np.ndarray:
    """Sinus rhythm at 72/min with a tremor (Parkinsonian, tooth-brushing, shivering) switched on over
    ``on_s``: a sine near ``tremor_hz`` (drifting +-0.3 Hz) of ``tremor_uv`` (70-100 %, slowly varying)."""
    x, _ = waves_per_beat(fs, seconds, SINUS_WAVES, seed=seed)
    t = np.arange(len(x)) / fs
    phase = 2 * np.pi * np.cumsum(tremor_hz + 0.3 * np.sin(2 * np.pi * 0.1 * t)) / fs
    env = tremor_uv * (0.7 + 0.3 * np.sin(2 * np.pi * 0.3 * t)) * ((t > on_s[0]) & (t < on_s[1]))
    return x + env * np.sin(phase)


def asystole_among_spikes(fs: float, spikes_per_s: float, seed: int) -> np.ndarray:
    """40 s of sinus rhythm, 12 s of asystole on a 5-µV baseline carrying random sharp artefact spikes
    (Poisson, 0.1-0.3x the QRS, either polarity), then 20 s of sinus rhythm again."""
    rng = np.random.default_rng(seed)
    x, _ = waves_per_beat(fs, 40.0, SINUS_WAVES)
    n = int(12 * fs)
    t = np.arange(n) / fs
    gap = rng.normal(0.0, 5.0, n)
    c = 0.4 + rng.exponential(1.0 / spikes_per_s)
    while c < 11.5:
        gap += rng.uniform(0.1, 0.3) * 1200.0 * np.exp(-0.5 * ((t - c) / 0.008) ** 2) * rng.choice([-1.0, 1.0])
        c += rng.exponential(1.0 / spikes_per_s)
    after, _ = waves_per_beat(fs, 20.0, SINUS_WAVES, seed=8)
    return np.concatenate((x, gap, after))
