"""The IIR filters the analyser runs, in numpy alone.

SciPy's ``scipy.signal`` gives the same filters, but importing it loads most of SciPy (stats,
optimize, sparse, interpolate...): about 78 MB of resident memory in every process that analyses
ECG, more than 1,500 patients' analysers hold (issue 19).  The few pieces the analyser needs are
small, so they live here and the box imports no SciPy at all; ``tests/unit/stream/test_ecg_filters.py`` checks
each against SciPy's own to rounding.

* ``butter_band_sos``: a Butterworth band-pass as second-order sections, designed as SciPy's
  ``butter`` does (analog prototype, band transform, bilinear transform with pre-warping).
* ``Sections.run``: the sections (direct form II transposed) with carried state.  Python cannot run a
  sample loop fast, so a block of L samples is one matrix product: the output is the block's
  impulse-response (Toeplitz) matrix times the input plus the initial state's free response, and
  the final state likewise.  The matrices are built once per filter and block length and shared
  by every analyser (a 250-sample block of a 4th-order band-pass: 0.5 MB).  Sections, not one
  high-order polynomial: at 360-500 Hz a 2-9 Hz band's polynomial form loses 5-6 digits this way.
* ``sosfilt_zi``, ``group_delay``, ``sosfiltfilt`` (on ``Sections.run_through``) as in SciPy (odd padding, steady-state initial
  conditions).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

BLOCK = 256  # longest block filtered by one matrix product; longer inputs are cut into blocks
_CACHE_BLOCKS = 32  # (filter, block length) matrices kept; frames come in a few lengths


# ------------------------------------------------------------------ design
def _butter_zpk(order: int, lo_hz: float, hi_hz: float, fs: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Zeros, poles and gain of a digital Butterworth band-pass (SciPy's ``butter(..., 'band')``)."""
    if not 0.0 < lo_hz < hi_hz < fs / 2.0:
        raise ValueError(f"band {lo_hz}-{hi_hz} Hz does not fit under Nyquist at {fs} Hz")
    # pre-warp the band edges for the bilinear transform (at SciPy's internal fs = 2)
    w1, w2 = (4.0 * math.tan(math.pi * f / fs) for f in (lo_hz, hi_hz))
    p = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # analog low-pass prototype
    bw, wo = w2 - w1, math.sqrt(w1 * w2)
    p_lp = p * bw / 2.0
    root = np.sqrt(p_lp**2 - wo**2)
    p_bp = np.concatenate((p_lp + root, p_lp - root))
    k_bp = bw**order  # the band transform puts ``order`` zeros at the origin
    fs2 = 4.0
    p_z = (fs2 + p_bp) / (fs2 - p_bp)
    z_z = np.concatenate((np.ones(order), -np.ones(order)))  # origin -> +1, infinity -> -1
    k_z = k_bp * float(np.real(fs2**order / np.prod(fs2 - p_bp)))
    return z_z, p_z, k_z


def butter_band_sos(order: int, lo_hz: float, hi_hz: float, fs: float) -> np.ndarray:
    """The same band-pass as second-order sections, one per conjugate pole pair, each with one zero
    at +1 and one at −1; the gain rides on the first section.  (SciPy orders and pairs its sections
    differently; the cascade is the same filter.)"""
    _, p, k = _butter_zpk(order, lo_hz, hi_hz, fs)
    upper = p[np.imag(p) > 0]
    upper = upper[np.argsort(np.abs(upper))]
    sos = np.zeros((len(upper), 6))
    for i, q in enumerate(upper):
        sos[i, :3] = (1.0, 0.0, -1.0)
        sos[i, 3:] = (1.0, -2.0 * q.real, abs(q) ** 2)
    sos[0, :3] *= k
    return sos


# ------------------------------------------------------------------ running
def _biquad_block(sec: tuple[float, ...], m: int) -> tuple[np.ndarray, np.ndarray]:
    """One section (direct form II transposed) over m samples: [y; z_end] = [Y; Z] @ [x; z_start]."""
    b0, b1, b2, a0, a1, a2 = (v / sec[3] for v in sec)
    big_a = np.array([[-a1, 1.0], [-a2, 0.0]])  # z[k+1] = A z[k] + B x[k], y[k] = z0[k] + b0 x[k]
    big_b = np.array([b1 - a1 * b0, b2 - a2 * b0])
    free = np.zeros((m, 2))  # row k: C A^k, the output's response to the initial state
    row = np.array([1.0, 0.0])
    for k in range(m):
        free[k] = row
        row = row @ big_a
    h = np.empty(m)  # impulse response
    h[0] = b0
    h[1:] = free[:-1] @ big_b
    idx = np.arange(m)
    lag = idx[:, None] - idx[None, :]
    toeplitz = np.where(lag >= 0, h[np.clip(lag, 0, m - 1)], 0.0)
    drive = np.empty((2, m))  # column j: A^(m-1-j) B, the final state's response to x[j]
    v = big_b.copy()
    for j in range(m - 1, -1, -1):
        drive[:, j] = v
        v = big_a @ v
    return np.hstack((toeplitz, free)), np.hstack((drive, np.linalg.matrix_power(big_a, m)))


@lru_cache(maxsize=_CACHE_BLOCKS)
def _cascade_block(sos: tuple[tuple[float, ...], ...], m: int) -> np.ndarray:
    """The whole cascade over m samples as one product: [y; z_end] = M @ [x; z_start], the state
    being every section's two values in order.  Built section by section, each well conditioned
    (a single high-order polynomial is not: its poles crowd near 1 at low frequencies)."""
    n = m + 2 * len(sos)
    signal_rows = np.hstack((np.eye(m), np.zeros((m, n - m))))  # the current signal, as rows over v
    state_rows = []
    for i, sec in enumerate(sos):
        y_sec, z_sec = _biquad_block(sec, m)
        pick = np.zeros((2, n))
        pick[:, m + 2 * i : m + 2 * i + 2] = np.eye(2)
        over_v = np.vstack((signal_rows, pick))
        state_rows.append(z_sec @ over_v)
        signal_rows = y_sec @ over_v
    return np.ascontiguousarray(np.vstack((signal_rows, *state_rows)))


class Sections:
    """A cascade of second-order sections, ready to run frame after frame.  Instances are shared
    (``band_pass``), and the block matrices are built once per filter and block length."""

    __slots__ = ("sos", "_key", "_zi", "_blocks")

    def __init__(self, sos: np.ndarray) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self._key = tuple(tuple(float(v) for v in sec) for sec in self.sos)
        self._zi = sosfilt_zi(self.sos)
        self._blocks: dict[int, np.ndarray] = {}  # block length -> the shared matrix (a reference)

    def zi(self) -> np.ndarray:
        """The state after a constant 1 forever (scale it by the first sample to start without a
        transient; SciPy's ``sosfilt_zi``)."""
        return self._zi.copy()

    def _rows(self, size: int) -> np.ndarray:
        rows = self._blocks.get(size)  # an int lookup per frame, not the nested tuple's hash
        if rows is None:
            if len(self._blocks) >= _CACHE_BLOCKS:
                self._blocks.clear()
            rows = self._blocks[size] = _cascade_block(self._key, size)
        return rows

    def run(self, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter ``x`` from state ``zi`` (sections × 2); return the output and the final state
        (SciPy's ``sosfilt(sos, x, zi=zi)``).  A frame is cut into equal blocks of at most
        ``BLOCK`` (360 samples: 2 × 180), so a stream of equal frames uses one matrix."""
        m = len(x)
        size = -(-m // -(-m // BLOCK)) if m else 1
        rows = self._rows(size)
        if m == size:
            yz = rows @ np.concatenate((x, zi.ravel()))
            return yz[:m], yz[m:].reshape(zi.shape)
        out = np.empty(m)
        z = zi.ravel()
        for s in range(0, m, size):
            chunk = x[s : s + size]
            if len(chunk) < size:  # a shorter last block: its own matrix
                y, z_end = self.run(chunk, z.reshape(zi.shape))
                out[s:] = y
                return out, z_end
            yz = rows @ np.concatenate((chunk, z))
            out[s : s + size] = yz[:size]
            z = yz[size:]
        return out, z.reshape(zi.shape)

    def run_through(self, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
        """The output alone, for a one-off signal of any length: blocks of ``BLOCK``, the last one
        padded with zeros (which cannot change the outputs before them), so one matrix serves all."""
        m = len(x)
        blocks = -(-m // BLOCK)
        padded = np.zeros(blocks * BLOCK)
        padded[:m] = x
        rows = self._rows(BLOCK)
        out = np.empty(blocks * BLOCK)
        z = zi.ravel()
        for s in range(0, blocks * BLOCK, BLOCK):
            yz = rows @ np.concatenate((padded[s : s + BLOCK], z))
            out[s : s + BLOCK] = yz[:BLOCK]
            z = yz[BLOCK:]
        return out[:m]


@lru_cache(maxsize=64)
def band_pass(order: int, lo_hz: float, hi_hz: float, fs: float) -> Sections:
    """A Butterworth band-pass of ``order`` (2 × order poles), shared by every caller asking for it."""
    return Sections(butter_band_sos(order, lo_hz, hi_hz, fs))


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """The state of the cascade after a constant 1 forever (SciPy's ``sosfilt_zi``)."""
    out, scale = np.zeros((len(sos), 2)), 1.0
    for i, sec in enumerate(sos):
        b, a = sec[:3] / sec[3], sec[3:] / sec[3]
        big_a = np.array([[-a[1], 1.0], [-a[2], 0.0]])
        big_b = np.array([b[1] - a[1] * b[0], b[2] - a[2] * b[0]])
        out[i] = scale * np.linalg.solve(np.eye(2) - big_a, big_b)
        scale *= float(b.sum() / a.sum())
    return out


def group_delay(sos: np.ndarray, f_hz: float, fs: float) -> float:
    """Group delay of the cascade in samples at one frequency (the sum of its sections')."""
    w = 2.0 * math.pi * f_hz / fs
    z = np.exp(-1j * w)
    total = 0.0
    for sec in sos:
        b, a = sec[:3], sec[3:]
        c = np.convolve(b, a[::-1])
        cr = c * np.arange(c.size)
        total += float(np.real(np.polyval(cr[::-1], z) / np.polyval(c[::-1], z))) - a.size + 1
    return total


def _odd_extended(x: np.ndarray, pad: int) -> np.ndarray:
    left = 2.0 * x[0] - x[pad:0:-1]
    right = 2.0 * x[-1] - x[-2 : -pad - 2 : -1]
    return np.concatenate((left, x, right))


def filtfilt_padding(sections: Sections) -> int:
    """How many samples ``sosfiltfilt`` pads each end with (SciPy's default): it needs more."""
    sos = sections.sos
    zeros = min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * (2 * len(sos) + 1 - zeros)


def sosfiltfilt(sections: Sections, x: np.ndarray) -> np.ndarray:
    """Zero-phase forward-backward filtering with SciPy's defaults (odd padding, steady-state initial
    conditions): ``scipy.signal.sosfiltfilt(sos, x)``.  ``x`` must be longer than the padding."""
    pad = filtfilt_padding(sections)
    if len(x) <= pad:
        raise ValueError(f"sosfiltfilt needs more than {pad} samples, got {len(x)}")
    ext = _odd_extended(np.asarray(x, dtype=np.float64), pad)
    zi = sections.zi()
    y = sections.run_through(ext, zi * ext[0])
    y = sections.run_through(y[::-1], zi * y[-1])
    return y[::-1][pad:-pad]
