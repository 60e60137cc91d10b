"""Synthetic artefact cases the dev records do not hold, each measured over many draws.

1. **False asystole** (an emergency alert while the heart beats): the QRS shrinks 5-10x at
   once (electrode moved) and a few sharp artefact spikes follow, at 125/250/360 Hz and spike
   heights of 0.15-0.35x the QRS.  Counted: cases that raise asystole (should be 0).
2. **Missed asystole**: 12 s with no QRS on a 5-µV baseline carrying random sharp spikes
   (Poisson, 0.5/1/2 per second, 0.1-0.3x the QRS, either polarity).  Counted: trials in
   which asystole is not raised.
3. **Tall T waves** twice the QRS (T sigma 30-60 ms) at 125-500 Hz: beats counted per true beat
   (1.00 is right; 2.00 means every T wave was taken for a beat).
4. **Tremor** (Parkinsonian, tooth-brushing, shivering: 4-7 Hz, 0.2-2 mV, drifting) over sinus
   rhythm at 72/min for 2 minutes, at 125/250/500 Hz: cases that raise ``vt_sustained`` (an
   emergency alert; should be 0) and cases that raise ``vt``.
5. **Coarse atrial fibrillation**: fibrillatory waves of 0.1-0.4x the QRS (150-500 µV, 4-9 Hz) under
   an irregular ventricular response, 4 minutes, 3 draws at 125/250/500 Hz: cases that raise
   ``vt_sustained`` (should be 0), cases that raise ``af`` (should be all) and cases that raise
   ``vt`` (should be 0).

    python bench/ecg_artefacts.py [--trials 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.ecg_synthesis import SINUS_WAVES, asystole_among_spikes, tall_t_waves, tremor_over_sinus, waves_per_beat  # noqa: E402
from stream.ecg.analyser import EcgAnalyser  # noqa: E402


def sinus(fs: float, seconds: float, seed: int = 0, hr_bpm: float = 72.0) -> tuple[np.ndarray, np.ndarray]:
    return waves_per_beat(fs, seconds, SINUS_WAVES, hr_bpm=hr_bpm, seed=seed)


def raised(fs: float, x: np.ndarray) -> list[str]:
    an = EcgAnalyser(fs)
    n = int(fs)
    out = []
    for k in range(0, len(x), n):
        out += [a.condition for a in an.push(x[k : k + n], t0_s=k / fs) if a.active]
    return out


def false_asystole() -> tuple[int, int]:
    bad = total = 0
    for fs in (125.0, 250.0, 360.0):
        for gain in (0.2, 0.1):
            for amp in (0.15, 0.25, 0.35):
                x, beats = sinus(fs, 80.0)
                x[int(40 * fs) :] *= gain
                t = np.arange(len(x)) / fs
                last = beats[beats < 40.0].max()
                for c in (last + 0.5, last + 1.05, last + 1.25):
                    x += amp * 1200.0 * np.exp(-0.5 * ((t - c) / 0.008) ** 2)
                total += 1
                bad += "asystole" in raised(fs, x)
    return bad, total


def missed_asystole(rate: float, trials: int, fs: float = 250.0) -> int:
    return sum("asystole" not in raised(fs, asystole_among_spikes(fs, rate, 100 + trial)) for trial in range(trials))


def t_wave_counts() -> tuple[float, float]:
    """(worst, median) beats counted per true beat over the T-wave cases."""
    ratios = []
    for fs in (125.0, 250.0, 360.0, 500.0):
        for qrs, t_amp in ((400.0, 800.0), (300.0, 900.0), (500.0, 700.0), (600.0, 1200.0)):
            for t_sigma in (0.03, 0.04, 0.05, 0.06):
                x, beats = waves_per_beat(fs, 60.0, tall_t_waves(qrs, t_amp, t_sigma))
                n = len(x)
                an = EcgAnalyser(fs)
                found = 0
                for k in range(0, n, int(fs)):
                    an.push(x[k : k + int(fs)], t0_s=k / fs)
                    found += len(an.drain_beats())
                ratios.append(found / len(beats))
    return max(ratios), float(np.median(ratios))


def tremor() -> tuple[int, int, int, int]:
    """(cases, with vt_sustained, with vt, vt alarms raised in all)"""
    cases = sustained = vt = alarms = 0
    for fs in (125.0, 250.0, 500.0):
        for f in (4.0, 5.5, 7.0):
            for amp in (200.0, 500.0, 1000.0, 2000.0):
                got = raised(fs, tremor_over_sinus(fs, f, amp))
                cases += 1
                sustained += "vt_sustained" in got
                vt += "vt" in got
                alarms += got.count("vt")
    return cases, sustained, vt, alarms


def coarse_af() -> tuple[int, int, int, int]:
    """(cases, with vt_sustained, with af, with vt)"""
    cases = sustained = af = vt = 0
    for fs in (125.0, 250.0, 500.0):
        for f_uv in (150.0, 300.0, 500.0):
            for seed in range(3):
                rng = np.random.default_rng(seed)
                n = int(240 * fs)
                t = np.arange(n) / fs
                x = rng.normal(0.0, 10.0, n)
                freq = np.clip(6.0 + 1.5 * np.cumsum(rng.normal(0.0, 1.0, n)) / np.sqrt(n), 4.0, 9.0)
                x += f_uv * np.sin(2 * np.pi * np.cumsum(freq) / fs)
                b = 0.5
                while b < 239.5:
                    for c, w, a in (
                        (-0.02, 0.008, -150.0),
                        (0.0, 0.010, 1200.0),
                        (0.025, 0.010, -300.0),
                        (0.25, 0.05, 300.0),
                    ):
                        lo, hi = int(max(0, (b + c - 5 * w) * fs)), int(min(n, (b + c + 5 * w) * fs))
                        x[lo:hi] += a * np.exp(-0.5 * ((t[lo:hi] - b - c) / w) ** 2)
                    b += rng.uniform(0.45, 1.1)
                got = raised(fs, x)
                cases += 1
                sustained += "vt_sustained" in got
                af += "af" in got
                vt += "vt" in got
    return cases, sustained, af, vt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="random draws per spike rate")
    args = ap.parse_args(argv)
    bad, total = false_asystole()
    print(f"false asystole after an amplitude drop + artefact spikes: {bad} of {total} cases")
    for rate in (0.5, 1.0, 2.0):
        m = missed_asystole(rate, args.trials)
        print(f"missed asystole among random spikes at {rate:.1f}/s: {m} of {args.trials} trials")
    worst, median = t_wave_counts()
    print(f"tall T waves (2x the QRS): beats counted per true beat: median {median:.2f}, worst {worst:.2f}")
    cases, sustained, vt, n_vt = tremor()
    print(f"tremor over sinus rhythm: vt_sustained in {sustained} of {cases} cases, vt in {vt} ({n_vt} vt alarms)")
    cases, sustained, af, vt = coarse_af()
    print(f"coarse atrial fibrillation: vt_sustained in {sustained} of {cases} cases, af raised in {af}, vt in {vt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
