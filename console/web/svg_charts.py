"""Charts as inline SVG, drawn on the server: the page needs no chart library and works offline.

- `trend_chart`: values over time with target lines and a shaded target band
  (BP with 140/90, glucose with 3.9–10.0 mmol/L).
- `sparkline`: a tiny trend for the patient list.
- `ecg_strip`: ECG on the usual paper grid (25 mm/s, 10 mm/mV; one small box
  0.04 s x 0.1 mV), so a doctor reads it as on paper. Units: samples in µV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

import numpy as np


@dataclass
class Series:
    label: str
    color: str
    points: list[tuple[datetime, float]]
    dots: bool = True


@dataclass
class Guides:
    hlines: list[tuple[float, str, str]] = field(default_factory=list)  # (y, colour, label)
    band: tuple[float, float] | None = None  # shaded target range


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = np.ceil(lo / step) * step
    return [round(float(v), 6) for v in np.arange(first, hi + step * 0.001, step)]


def _time_ticks(t0: datetime, t1: datetime) -> list[tuple[datetime, str]]:
    span = (t1 - t0).total_seconds()
    if span <= 0:
        return [(t0, t0.strftime("%m-%d %H:%M"))]
    if span <= 2 * 3600:
        step, fmt = timedelta(minutes=15 if span > 3600 else 10), "%H:%M"
    elif span <= 2 * 86400:
        step, fmt = timedelta(hours=6 if span > 86400 else 3), "%m-%d %H:%M"
    else:
        days = max(1, int(span // 86400 // 7))
        step, fmt = timedelta(days=days), "%m-%d"
    if step >= timedelta(days=1):
        start = t0.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    else:
        sec = int(step.total_seconds())
        base = t0.replace(minute=0, second=0, microsecond=0)
        k = int(np.ceil((t0 - base).total_seconds() / sec))
        start = base + timedelta(seconds=k * sec)
    out: list[tuple[datetime, str]] = []
    t = start
    while t <= t1 and len(out) < 12:
        out.append((t, t.strftime(fmt)))
        t += step
    return out


def trend_chart(
    series: Sequence[Series],
    t0: datetime,
    t1: datetime,
    y_range: tuple[float, float],
    guides: Guides | None = None,
    width: int = 720,
    height: int = 220,
    title: str = "",
) -> str:
    """A time-series chart; values outside `y_range` widen it rather than vanish."""
    guides = guides or Guides()
    left, right, top, bottom = 44, 12, 22 if title else 10, 26
    vals = [v for s in series for _, v in s.points]
    lo, hi = y_range
    if vals:
        lo, hi = min(lo, min(vals)), max(hi, max(vals))
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    span_t = max(1.0, (t1 - t0).total_seconds())
    pw, ph = width - left - right, height - top - bottom

    def x(t: datetime) -> float:
        return left + pw * (t - t0).total_seconds() / span_t

    def y(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">'
    ]
    if title:
        out.append(f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>')
    if guides.band:
        b0, b1 = guides.band
        out.append(
            f'<rect x="{left}" y="{y(b1):.1f}" width="{pw}" height="{max(0.0, y(b0) - y(b1)):.1f}" '
            f'fill="#2e7d32" fill-opacity="0.08"/>'
        )
    for v in _nice_ticks(lo, hi):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:g}</text>')
    for t, label in _time_ticks(t0, t1):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle" fill="#555">{escape(label)}</text>')
    for v, color, label in guides.hlines:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{color}" '
            f'stroke-dasharray="5 4"/>'
        )
        out.append(
            f'<text x="{left + pw - 2}" y="{y(v) - 3:.1f}" text-anchor="end" fill="{color}">{escape(label)}</text>'
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    lx = left + 6
    for s in series:
        pts = [(x(t), y(v)) for t, v in s.points]
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.6"/>')
        if s.dots and len(pts) <= 400:
            out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.4" fill="{s.color}"/>' for px, py in pts]
        if s.label:
            out.append(
                f'<rect x="{lx}" y="{top + 5}" width="10" height="3" fill="{s.color}"/>'
                f'<text x="{lx + 14}" y="{top + 10}" fill="#333">{escape(s.label)}</text>'
            )
            lx += 14 + 7 * len(s.label) + 16
    out.append("</svg>")
    return "".join(out)


def sparkline(values: Sequence[float], limit: float | None = None, width: int = 120, height: int = 28) -> str:
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    if limit is not None:
        lo, hi = min(lo, limit), max(hi, limit)
    hi = hi if hi > lo else lo + 1

    def y(v: float) -> float:
        return 2 + (height - 4) * (1 - (v - lo) / (hi - lo))

    step = (width - 4) / (len(values) - 1)
    path = " ".join(f"{2 + i * step:.1f},{y(v):.1f}" for i, v in enumerate(values))
    out = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    if limit is not None:
        out.append(
            f'<line x1="0" x2="{width}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" stroke="#c62828" '
            f'stroke-dasharray="3 3" stroke-width="0.8"/>'
        )
    out.append(f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="1.4"/></svg>')
    return "".join(out)


PX_PER_S = 100.0  # 25 mm/s at 4 px/mm
PX_PER_MV = 40.0  # 10 mm/mV at 4 px/mm


def ecg_strip(
    samples_uv: Sequence[float] | np.ndarray,
    fs: float,
    *,
    mark_s: float | None = None,
    label: str = "",
    max_points_per_s: int = 250,
) -> str:
    """ECG on paper grid. `mark_s`: seconds from the strip start to mark (the event)."""
    x = np.asarray(samples_uv, dtype=np.float64)
    if x.size == 0 or fs <= 0:
        return ""
    seconds = x.size / fs
    step = max(1, int(round(fs / max_points_per_s)))
    xs = x[::step]
    # Centre on the median so a wandering baseline does not push the trace off the paper.
    mv = (xs - np.median(xs)) / 1000.0
    mv = np.clip(mv, -2.0, 2.0)
    width = int(np.ceil(seconds * PX_PER_S))
    height = int(4.0 * PX_PER_MV)  # ±2 mV
    mid = height / 2
    out = [
        f'<svg class="ecg" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label or "ECG")}">',
        f'<rect width="{width}" height="{height}" fill="#fff7f7"/>',
    ]
    small = PX_PER_S * 0.04
    grid = []
    for i in range(int(width / small) + 1):
        gx = i * small
        big = i % 5 == 0
        grid.append(
            f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="0" y2="{height}" stroke="{"#f0a0a0" if big else "#fbd9d9"}" '
            f'stroke-width="{0.9 if big else 0.5}"/>'
        )
    for j in range(int(height / small) + 1):
        gy = j * small
        big = j % 5 == 0
        grid.append(
            f'<line x1="0" x2="{width}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{"#f0a0a0" if big else "#fbd9d9"}" '
            f'stroke-width="{0.9 if big else 0.5}"/>'
        )
    out += grid
    if mark_s is not None and 0 <= mark_s <= seconds:
        mx = mark_s * PX_PER_S
        out.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="0" y2="{height}" stroke="#1565c0" stroke-width="1.5" '
            f'stroke-dasharray="6 4"/>'
        )
    dt = step / fs
    path = " ".join(f"{i * dt * PX_PER_S:.1f},{mid - v * PX_PER_MV:.1f}" for i, v in enumerate(mv))
    out.append(f'<polyline points="{path}" fill="none" stroke="#111" stroke-width="1.2"/>')
    # 1 mV calibration pulse and the paper speed, as on an ECG printout.
    out.append(
        f'<polyline points="4,{mid} 8,{mid} 8,{mid - PX_PER_MV} 18,{mid - PX_PER_MV} 18,{mid} 22,{mid}" '
        f'fill="none" stroke="#111" stroke-width="1.2"/>'
    )
    out.append(
        f'<text x="26" y="14" font-family="sans-serif" font-size="11" fill="#555">25 mm/s · 10 mm/mV'
        f"{(' · ' + escape(label)) if label else ''}</text></svg>"
    )
    return "".join(out)


PAPER_ROW_S = 10.0  # seconds per row of a printed strip (25 cm of paper)
PAPER_ROW_MM = 40.0  # row height: ±2 mV at 10 mm/mV
PAPER_MARGIN_MM = 8.0  # left of each row: the 1 mV calibration pulse
PAPER_POINTS_PER_S = 250  # drawn points per second at most (peaks kept)


def _keep_peaks(x: np.ndarray, step: int) -> np.ndarray:
    """Every `step` samples, the one farthest from zero: QRS peaks survive the thinning."""
    if step <= 1:
        return x
    n = x.size // step * step
    bins = x[:n].reshape(-1, step)
    picked = bins[np.arange(bins.shape[0]), np.argmax(np.abs(bins), axis=1)]
    return np.concatenate([picked, x[n:][:1]])


def ecg_paper(samples_uv: Sequence[float] | np.ndarray, fs: float, *, rows: int | None = None, label: str = "") -> str:
    """A short strip as printed ECG paper, in real units: 1 user unit = 1 mm, 1 mm grid, 5 mm bold,
    25 mm/s, 10 mm/mV, rows of 10 s with a 1 mV calibration pulse at the start of each.

    The SVG's width and height are in mm, so at 100 % zoom it has the paper's size; pages scale it
    down to their width. The baseline is taken out with a 2-s moving mean (an ECG machine's
    high-pass does the same) and each row is clipped at ±2 mV. `rows`: only the first rows.
    """
    x = np.asarray(samples_uv, dtype=np.float64)
    if x.size == 0 or fs <= 0:
        return ""
    win = max(1, int(round(2.0 * fs)))
    if x.size > win:
        c = np.cumsum(np.concatenate([[0.0], x]))
        lo = np.clip(np.arange(x.size) - win // 2, 0, x.size)
        hi = np.clip(np.arange(x.size) + win // 2 + 1, 0, x.size)
        x = x - (c[hi] - c[lo]) / (hi - lo)
    else:
        x = x - np.median(x)
    per_row = int(round(PAPER_ROW_S * fs))
    n_rows = max(1, int(np.ceil(x.size / per_row)))
    if rows is not None:
        n_rows = min(n_rows, max(1, rows))
    width = PAPER_MARGIN_MM + PAPER_ROW_S * 25.0
    height = n_rows * PAPER_ROW_MM + (6.0 if label else 0.0)
    top = 6.0 if label else 0.0
    step = max(1, int(np.ceil(fs / PAPER_POINTS_PER_S)))
    out = [
        f'<svg class="ecg-paper" xmlns="http://www.w3.org/2000/svg" width="{width:g}mm" height="{height:g}mm" '
        f'viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{escape(label or "ECG")}">',
        f'<rect width="{width:g}" height="{height:g}" fill="#fff7f7"/>',
    ]
    h = n_rows * PAPER_ROW_MM
    thin = "".join(f"M{i} {top:g}v{h:g}" for i in range(int(width) + 1) if i % 5) + "".join(
        f"M0 {top + j:g}h{width:g}" for j in range(int(h) + 1) if j % 5
    )
    bold = "".join(f"M{i} {top:g}v{h:g}" for i in range(0, int(width) + 1, 5)) + "".join(
        f"M0 {top + j:g}h{width:g}" for j in range(0, int(h) + 1, 5)
    )
    out.append(f'<path d="{thin}" stroke="#f6c4c4" stroke-width="0.1" fill="none"/>')
    out.append(f'<path d="{bold}" stroke="#e48f8f" stroke-width="0.25" fill="none"/>')
    if label:
        out.append(
            f'<text x="1" y="4.2" font-family="sans-serif" font-size="3.4" fill="#333">'
            f"{escape(label)} · 25 mm/s · 10 mm/mV</text>"
        )
    for k in range(n_rows):
        seg = x[k * per_row : (k + 1) * per_row]
        if seg.size == 0:
            break
        mid = top + k * PAPER_ROW_MM + PAPER_ROW_MM / 2
        # 1 mV calibration pulse, 0.2 s wide, as an ECG machine prints it
        out.append(f'<path d="M1 {mid:g}h1.5v-10h5v10h0.5" stroke="#111" stroke-width="0.3" fill="none"/>')
        out.append(
            f'<text x="{PAPER_MARGIN_MM + 0.8:g}" y="{mid - PAPER_ROW_MM / 2 + 3.2:.1f}" font-family="sans-serif" '
            f'font-size="2.6" fill="#777">{k * PAPER_ROW_S:g} s</text>'
        )
        thinned = _keep_peaks(seg, step)
        t_mm = PAPER_MARGIN_MM + np.arange(thinned.size) * (step / fs) * 25.0
        y_mm = mid - np.clip(thinned / 1000.0, -2.0, 2.0) * 10.0
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(t_mm, y_mm))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#111" stroke-width="0.3" stroke-linejoin="round"/>')
    out.append("</svg>")
    return "".join(out)
