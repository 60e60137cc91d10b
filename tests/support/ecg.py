"""Synthetic ECG for the analyser's tests."""

from __future__ import annotations

import numpy as np


def synthetic_ecg(
    fs: float,
    seconds: float,
    hr_bpm: float = 72.0,
    *,
    noise_uv: float = 10.0,
    seed: int = 0,
    rr_s: list[float] | None = None,
    p_wave: bool = True,
    f_wave_uv: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A simple ECG-like signal (µV): P, QRS and T Gaussians; returns samples and R times (s).

    ``p_wave=False`` leaves the P wave out and ``f_wave_uv`` adds a fibrillatory baseline
    (4-9 Hz, drifting frequency and phase) of that amplitude: atrial fibrillation.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    x = rng.normal(0.0, noise_uv, n) + 80.0 * np.sin(2 * np.pi * 0.2 * t)  # noise + baseline wander
    if f_wave_uv > 0.0:
        freq = 6.0 + 1.5 * np.cumsum(rng.normal(0.0, 1.0, n)) / np.sqrt(n)
        freq = np.clip(freq, 4.0, 9.0)
        x += f_wave_uv * np.sin(2 * np.pi * np.cumsum(freq) / fs)
    beats = []
    tb = 0.5
    k = 0
    while tb < seconds - 0.5:
        beats.append(tb)
        rr = rr_s[k % len(rr_s)] if rr_s else 60.0 / hr_bpm
        tb += rr
        k += 1
    waves = (
        (-0.16, 0.025, 120.0),
        (-0.02, 0.008, -150.0),
        (0.0, 0.010, 1200.0),
        (0.025, 0.010, -300.0),
        (0.25, 0.05, 300.0),
    )
    if not p_wave:
        waves = waves[1:]
    for b in beats:
        for centre, width, amp in waves:
            lo = int(max(0, (b + centre - 5 * width) * fs))
            hi = int(min(n, (b + centre + 5 * width) * fs))
            if hi > lo:
                tt = t[lo:hi] - (b + centre)
                x[lo:hi] += amp * np.exp(-0.5 * (tt / width) ** 2)
    return x, np.array(beats)
