"""The analyser's numpy filters give SciPy's results to rounding, and the box never imports SciPy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from stream.ecg import filters
from stream.ecg.screening import _find_peaks, _welch

RATES = (125.0, 250.0, 300.0, 360.0, 500.0)
BANDS = ((5.0, 15.0), (2.0, 9.0), (0.7, 40.0), (0.5, 40.0))  # QRS, VF, diagnostic, screening


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("band", BANDS)
def test_band_pass_run_frame_by_frame_matches_scipy_lfilter(fs: float, band: tuple[float, float]) -> None:
    lo, hi = band[0], min(band[1], 0.45 * fs)
    b, a = signal.butter(2, [lo, hi], btype="band", fs=fs)
    x = np.random.default_rng(7).normal(0.0, 500.0, 3000) + 800.0  # with a DC offset, as raw ECG has
    want, _ = signal.lfilter(b, a, x, zi=signal.lfilter_zi(b, a) * x[0])
    sec = filters.band_pass(2, lo, hi, fs)
    z = sec.zi() * x[0]
    got = []
    for s, e in ((0, 1), (1, 251), (251, 700), (700, 3000)):  # odd frame lengths, and longer than a block
        y, z = sec.run(x[s:e], z)
        got.append(y)
    assert _rel(np.concatenate(got), want) < 1e-9
    assert abs(filters.group_delay(sec.sos, 10.0, fs) - signal.group_delay((b, a), w=[10.0], fs=fs)[1][0]) < 1e-6


@pytest.mark.parametrize("fs", RATES)
def test_zero_phase_filters_match_scipy(fs: float) -> None:
    x = np.random.default_rng(3).normal(0.0, 300.0, 2000).cumsum()
    hi = min(40.0, 0.45 * fs)
    spikes, spikes_scipy = (
        filters.band_pass(4, 18.0, hi, fs),
        signal.butter(4, [18.0, hi], btype="band", fs=fs, output="sos"),
    )
    for n in (2000, 101, 256, 257):  # several blocks, one padded block, exactly one, just over one
        assert _rel(filters.sosfiltfilt(spikes, x[:n]), signal.sosfiltfilt(spikes_scipy, x[:n])) < 1e-9
    b, a = signal.butter(2, [0.5, hi], btype="band", fs=fs)
    assert _rel(filters.sosfiltfilt(filters.band_pass(2, 0.5, hi, fs), x), signal.filtfilt(b, a, x)) < 1e-9


def test_a_band_that_does_not_fit_under_nyquist_is_refused() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        filters.butter_band_sos(2, 5.0, 70.0, 125.0)
    with pytest.raises(ValueError, match="more than"):
        filters.sosfiltfilt(filters.band_pass(2, 5.0, 15.0, 250.0), np.zeros(10))


def test_welch_and_find_peaks_match_scipy() -> None:
    rng = np.random.default_rng(11)
    for n, fs in ((300, 300.0), (601, 300.0), (9000, 300.0), (7777, 250.0)):
        x = rng.normal(size=n).cumsum()
        f1, p1 = signal.welch(x, fs=fs, nperseg=min(n, int(2 * fs)))
        f2, p2 = _welch(x, fs, min(n, int(2 * fs)))
        assert np.allclose(f1, f2) and _rel(p2, p1) < 1e-12
        for decimals in (1, 6):  # coarse rounding makes flat tops and equal heights
            e = np.round(rng.normal(size=n) ** 2, decimals)
            h, d = 0.3 * float(np.quantile(e, 0.98)), int(rng.integers(1, 90))
            assert np.array_equal(_find_peaks(e, h, d), signal.find_peaks(e, height=h, distance=d)[0])


def test_the_analyser_and_the_screening_import_no_scipy() -> None:
    # scipy.signal brings most of SciPy: ~78 MB resident in every process that analyses ECG (issue 19)
    code = (
        "import sys, stream.ecg.analyser, stream.ecg.screening, stream.strip_screening;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
