"""The patient report (`vitalgate report --patient P --period 7d`, and the link on the doctor's page).

From a clinic's storage (read-only, safe while the gateway runs) over one
period it works out, then draws with matplotlib:

- blood pressure: every reading, daily means, and the control rate: the share
  of readings below the target 140/90 mmHg (CN guideline 2024; docs/spec/clinical-rules.md §Blood pressure);
- glucose: time in range 3.9–10.0 mmol/L, below and above. Home meters are
  spot checks, so "time" is the share of readings (a CGM would weight by
  time); hypoglycaemia episodes: runs of consecutive readings < 3.9
  (a "LO" reading counts), severe when one of them is < 3.0;
- heart rhythm from the ECG patch's per-minute summaries: monitored time, AF
  burden (minutes the analyser called AF / analysable minutes), heart rate,
  and the arrhythmia alerts with the ECG strip each one carried;
- alerts: how many reached each tier and how fast each tier acknowledged them
  (from the tier being told to the acknowledgement, at the tier that acked);
- AF screening (short strips, docs/ecg-screening.md): each strip of the period with its result,
  heart rate and whether the patient was referred; the af/other strips drawn (first 10 s).

Output: one self-contained HTML file (plots as embedded PNG) and a PDF
(matplotlib's PdfPages: pure pip, no browser needed on the box). Labels are
Chinese when a CJK font is installed (fonts-wqy-microhei, fonts-noto-cjk);
without one the plots fall back to English so no text renders as boxes.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from console import i18n
from console.clinic_records import ClinicRecords
from stream.models import iso

BP_TARGET = (140.0, 90.0)
GLUCOSE_RANGE = (3.9, 10.0)
HYPO_SEVERE = 3.0
RHYTHM_CONDITIONS = (
    "af",
    "af_rvr",
    "vt",
    "vt_sustained",
    "pause",
    "asystole",
    "bradycardia",
    "tachycardia",
    "pvc_frequent",
)
MAX_STRIPS = 6  # event strips drawn in the report; the rest are listed
MAX_SCREEN_STRIPS = 4  # screening strips (af/other) drawn; the rest are listed
SCREEN_DRAWN_S = 10.0  # of each drawn screening strip, its first seconds
TIERS = ("village", "township", "county", "emergency")
_REACH = ("raised", "upgraded", "escalated", "released", "repeated")
_CJK_NAMES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "SimHei",
    "Microsoft YaHei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
)
_CJK_FILES = ("wqy", "notosanscjk", "notoserifcjk", "droidsansfallback", "uming", "ukai", "sourcehansans")


# ---------------------------------------------------------------- numbers


@dataclass
class ReportData:
    patient_id: str
    clinic: str
    t0: datetime
    t1: datetime
    bp: list[dict] = field(default_factory=list)
    glucose: list[dict] = field(default_factory=list)
    rhythm: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    strips: list[dict] = field(default_factory=list)  # screening strips, oldest first (no samples)
    strip_samples: dict[str, tuple[float, Any]] = field(default_factory=dict)  # key -> (fs, µV) of the drawn ones
    stats: dict[str, Any] = field(default_factory=dict)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def bp_stats(rows: list[dict]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    sys_ = [float(r["systolic"]) for r in rows]
    dia = [float(r["diastolic"]) for r in rows]
    controlled = sum(1 for s, d in zip(sys_, dia) if s < BP_TARGET[0] and d < BP_TARGET[1])
    return {
        "n": len(rows),
        "mean_sys": statistics.fmean(sys_),
        "mean_dia": statistics.fmean(dia),
        "max_sys": max(sys_),
        "max_dia": max(dia),
        "controlled": controlled,
        "control_rate": controlled / len(rows),
        "crisis": sum(1 for s, d in zip(sys_, dia) if s >= 180 or d >= 110),
    }


def glucose_stats(rows: list[dict]) -> dict[str, Any]:
    vals: list[float] = []
    for r in rows:
        if r.get("mmol_l") is not None:
            vals.append(float(r["mmol_l"]))
        elif r.get("range") == "lo":
            vals.append(0.0)  # below the meter's range: certainly below 3.0
        elif r.get("range") == "hi":
            vals.append(99.0)
    if not vals:
        return {"n": 0, "episodes": []}
    lo, hi = GLUCOSE_RANGE
    below = sum(1 for v in vals if v < lo)
    above = sum(1 for v in vals if v > hi)
    episodes: list[dict] = []
    cur: dict | None = None
    for r, v in zip([r for r in rows if r.get("mmol_l") is not None or r.get("range")], vals):
        if v < lo:
            if cur is None:
                cur = {"start": r["ts"], "lowest": v, "n": 0}
                episodes.append(cur)
            cur["n"] += 1
            cur["lowest"] = min(cur["lowest"], v)
            cur["end"] = r["ts"]
        else:
            cur = None
    for e in episodes:
        e["severe"] = e["lowest"] < HYPO_SEVERE
    real = [v for v in vals if 0.0 < v < 99.0]
    return {
        "n": len(vals),
        "tir": (len(vals) - below - above) / len(vals),
        "below": below / len(vals),
        "above": above / len(vals),
        "mean": statistics.fmean(real) if real else None,
        "episodes": episodes,
        "hypo": len(episodes),
        "hypo_severe": sum(1 for e in episodes if e["severe"]),
    }


def rhythm_stats(rows: list[dict]) -> dict[str, Any]:
    if not rows:
        return {"minutes": 0.0}
    total = sum(float(r["window_s"] or 0) for r in rows) / 60.0
    readable = [r for r in rows if r["rhythm"] != "unknown"]
    af = sum(float(r["window_s"] or 0) for r in readable if r["rhythm"] == "af") / 60.0
    readable_min = sum(float(r["window_s"] or 0) for r in readable) / 60.0
    hrs = [float(r["hr_bpm"]) for r in readable if r["hr_bpm"] is not None]
    return {
        "minutes": total,
        "readable_minutes": readable_min,
        "af_minutes": af,
        "af_burden": af / readable_min if readable_min else None,
        "hr_mean": statistics.fmean(hrs) if hrs else None,
        "hr_min": min(hrs) if hrs else None,
        "hr_max": max(hrs) if hrs else None,
    }


def ack_stats(alerts: list[dict], t0: datetime, t1: datetime) -> dict[str, Any]:
    """Per tier: alerts that reached it in the period, how many it acknowledged, and its ack delays (s)."""
    per: dict[str, dict[str, Any]] = {t: {"reached": 0, "acked": 0, "delays": []} for t in TIERS}
    for a in alerts:
        reached: dict[str, datetime] = {}
        for tr in a.get("transitions", []):
            at = _ts(tr["at"])
            tier = tr.get("tier") or a["tier"]
            if tr["what"] in _REACH and tier:
                reached.setdefault(tier, at)
            if tr["what"] == "escalated" and tr["detail"].get("to"):
                reached.setdefault(tr["detail"]["to"], at)
            if tr["what"] == "acknowledged" and tier in reached:
                per[tier]["acked"] += 1
                per[tier]["delays"].append((at - reached[tier]).total_seconds())
        for tier, at in reached.items():
            if t0 <= at <= t1 and tier in per:
                per[tier]["reached"] += 1
    for v in per.values():
        d = sorted(v["delays"])
        v["median_s"] = statistics.median(d) if d else None
        v["max_s"] = max(d) if d else None
    return per


def screening_stats(strips: list[dict]) -> dict[str, Any]:
    """Screening strips of the period by label, and the af/other ones referred or still waiting."""
    labels = {lab: sum(1 for s in strips if s["label"] == lab) for lab in ("normal", "af", "other", "noisy")}
    positive = [s for s in strips if s["label"] in ("af", "other")]
    return {
        "n": len(strips),
        "labels": labels,
        "referred": sum(1 for s in positive if s["referred_at"]),
        "waiting": sum(1 for s in positive if not s["referred_at"]),
    }


def build_report(storage: Path, clinic: str, patient_id: str, period: timedelta, now: datetime) -> ReportData:
    t0 = now - period
    rec = ClinicRecords(storage)
    try:
        data = ReportData(
            patient_id,
            clinic,
            t0,
            now,
            bp=rec.readings(patient_id, "blood_pressure", since=t0, until=now),
            glucose=rec.readings(patient_id, "glucose", since=t0, until=now),
            rhythm=rec.rhythm(patient_id, since=t0, until=now),
            alerts=rec.alerts(patient_id, since=t0),
            strips=rec.strips(patient_id, since=t0, until=now)[::-1],
        )
        for st in [s for s in data.strips if s["label"] in ("af", "other")][:MAX_SCREEN_STRIPS]:
            full = rec.strip(st["key"])
            if full is not None:
                n = int(SCREEN_DRAWN_S * full["fs"])
                data.strip_samples[st["key"]] = (full["fs"], full["samples_uv"][:n])
    finally:
        rec.close()
    data.alerts = [a for a in data.alerts if _ts(a["opened_at"]) <= now]
    events = [a for a in data.alerts if a["condition"] in RHYTHM_CONDITIONS and _ts(a["opened_at"]) >= t0]
    data.stats = {
        "bp": bp_stats(data.bp),
        "glucose": glucose_stats(data.glucose),
        "rhythm": rhythm_stats(data.rhythm),
        "events": events,
        "ack": ack_stats(data.alerts, t0, now),
        "screening": screening_stats(data.strips),
        "alerts_in_period": [a for a in data.alerts if _ts(a["opened_at"]) >= t0],
    }
    return data


# ---------------------------------------------------------------- plots


def _cjk_font() -> str | None:
    from matplotlib import font_manager as fm

    names = {f.name for f in fm.fontManager.ttflist}
    for n in _CJK_NAMES:
        if n in names:
            return n
    # Fonts installed after matplotlib built its cache (or .ttc collections) are not indexed yet.
    for root in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"):
        if not root.is_dir():
            continue
        for f in root.rglob("*"):
            if f.suffix.lower() in (".ttf", ".ttc", ".otf") and any(
                k in f.name.lower().replace("-", "") for k in _CJK_FILES
            ):
                try:
                    fm.fontManager.addfont(str(f))
                except (OSError, RuntimeError, ValueError):
                    continue
    names = {f.name for f in fm.fontManager.ttflist}
    return next((n for n in _CJK_NAMES if n in names), None)


class _Plotter:
    """matplotlib's object API (no pyplot): safe in the gateway's worker thread, no global state."""

    def __init__(self, lang: str) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import rcParams

        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # "no bold weight" for CJK fonts
        font = _cjk_font() if lang == "zh" else None
        self.lang = lang if (lang != "zh" or font) else "en"
        self.rc: dict[str, Any] = {
            "font.family": "sans-serif",
            "font.sans-serif": [font, "DejaVu Sans"] if font else ["DejaVu Sans"],
            "axes.unicode_minus": False,
            "font.size": 9,
        }
        rcParams.update(self.rc)  # type: ignore[arg-type]  # matplotlib types its keys as literals
        self.t = i18n.translator(self.lang)

    def figure(self, h: float = 2.8):  # type: ignore[no-untyped-def]
        from matplotlib.figure import Figure

        return Figure(figsize=(8.0, h), dpi=110, layout="constrained")

    def _time_axis(self, ax, t0: datetime, t1: datetime) -> None:  # type: ignore[no-untyped-def]
        import matplotlib.dates as mdates

        ax.set_xlim(t0, t1)
        tz = t0.tzinfo
        span = (t1 - t0).total_seconds()
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d" if span > 2 * 86400 else "%m-%d %H:%M", tz=tz))
        ax.grid(True, color="#e6e6e6", linewidth=0.6)

    def bp(self, d: ReportData, fig=None):  # type: ignore[no-untyped-def]
        fig = fig if fig is not None else self.figure(3.0)
        ax, bx = fig.subplots(1, 2, width_ratios=[3, 1.2])
        ts = [_ts(r["ts"]) for r in d.bp]
        sys_ = [r["systolic"] for r in d.bp]
        dia = [r["diastolic"] for r in d.bp]
        ax.axhspan(0, BP_TARGET[0], color="#2e7d32", alpha=0.05)
        ax.plot(ts, sys_, "o-", color="#c62828", ms=3, lw=1, label=self.t("report.bp") + " SBP")
        ax.plot(ts, dia, "o-", color="#1565c0", ms=3, lw=1, label="DBP")
        ax.axhline(BP_TARGET[0], color="#c62828", ls="--", lw=0.8)
        ax.axhline(BP_TARGET[1], color="#1565c0", ls="--", lw=0.8)
        ax.set_ylim(min(50, *dia) - 5, max(190, *sys_) + 5)
        ax.set_ylabel("mmHg")
        ax.set_title(f"{self.t('report.bp')} · {self.t('report.target')} <140/90", loc="left")
        ax.legend(loc="upper left", fontsize=7, frameon=False)
        self._time_axis(ax, d.t0, d.t1)
        s = d.stats["bp"]
        rate = s["control_rate"]
        bx.pie(
            [rate, 1 - rate],
            colors=["#2e7d32", "#e57373"],
            startangle=90,
            counterclock=False,
            wedgeprops={"width": 0.35},
        )
        bx.text(0, 0, f"{rate:.0%}", ha="center", va="center", fontsize=16, fontweight="bold")
        bx.set_title(self.t("report.bp_control"), fontsize=9)
        return fig

    def glucose(self, d: ReportData, fig=None):  # type: ignore[no-untyped-def]
        fig = fig if fig is not None else self.figure(3.0)
        ax, bx = fig.subplots(1, 2, width_ratios=[3, 1.2])
        pts = [(_ts(r["ts"]), float(r["mmol_l"])) for r in d.glucose if r.get("mmol_l") is not None]
        lo, hi = GLUCOSE_RANGE
        ax.axhspan(lo, hi, color="#2e7d32", alpha=0.10)
        if pts:
            ts, vs = zip(*pts)
            colors = ["#c62828" if v < lo else ("#ef6c00" if v > hi else "#2e7d32") for v in vs]
            ax.plot(ts, vs, "-", color="#9e9e9e", lw=0.8)
            ax.scatter(ts, vs, c=colors, s=16, zorder=3)
            ax.set_ylim(min(2.0, min(vs) - 0.5), max(14.0, max(vs) + 1))
        ax.axhline(HYPO_SEVERE, color="#8e0000", ls=":", lw=0.8)
        ax.set_ylabel("mmol/L")
        ax.set_title(f"{self.t('report.glucose')} · {self.t('report.tir')}", loc="left")
        self._time_axis(ax, d.t0, d.t1)
        s = d.stats["glucose"]
        parts = [s["below"], s["tir"], s["above"]]
        labels = [self.t("report.below"), self.t("report.in_range"), self.t("report.above")]
        bottom = 0.0
        for v, c, lab in zip(parts, ["#c62828", "#2e7d32", "#ef6c00"], labels):
            bx.bar([0], [v * 100], bottom=[bottom], color=c, width=0.6)
            if v > 0.04:
                bx.text(0, bottom + v * 50, f"{lab} {v:.0%}", ha="center", va="center", color="white", fontsize=8)
            bottom += v * 100
        bx.set_xlim(-0.6, 0.6)
        bx.set_ylim(0, 100)
        bx.set_xticks([])
        bx.set_ylabel("%")
        return fig

    def rhythm(self, d: ReportData, fig=None):  # type: ignore[no-untyped-def]
        fig = fig if fig is not None else self.figure(3.0)
        ax, bx = fig.subplots(1, 2, width_ratios=[3, 1.2])
        hourly: dict[datetime, list[float]] = {}
        days: dict[datetime, list[float]] = {}
        for r in d.rhythm:
            t = _ts(r["ts"])
            if r["hr_bpm"] is not None:
                hourly.setdefault(t.replace(minute=0, second=0, microsecond=0), []).append(float(r["hr_bpm"]))
            if r["rhythm"] != "unknown":
                day = t.replace(hour=0, minute=0, second=0, microsecond=0)
                days.setdefault(day, [0.0, 0.0])
                days[day][0] += float(r["window_s"] or 0)
                if r["rhythm"] == "af":
                    days[day][1] += float(r["window_s"] or 0)
        if hourly:
            ts = sorted(hourly)
            ax.plot(
                [t + timedelta(minutes=30) for t in ts],
                [statistics.fmean(hourly[t]) for t in ts],
                "-",
                color="#2e7d32",
                lw=1.2,
            )
        ax.axhline(100, color="#ef6c00", ls="--", lw=0.8)
        ax.axhline(60, color="#1565c0", ls="--", lw=0.8)
        ax.set_ylabel(self.t("report.hr"))
        ax.set_title(self.t("report.ecg"), loc="left")
        self._time_axis(ax, d.t0, d.t1)
        if days:
            ks = sorted(days)
            bx.bar(
                [k.strftime("%m-%d") for k in ks],
                [100 * days[k][1] / days[k][0] if days[k][0] else 0 for k in ks],
                color="#c62828",
            )
            bx.tick_params(axis="x", labelrotation=60, labelsize=7)
        bx.set_ylim(0, 100)
        bx.set_title(self.t("report.af_burden") + " %", fontsize=9)
        return fig

    def strip(self, alert: dict, fig=None):  # type: ignore[no-untyped-def]
        import numpy as np

        st = alert["evidence"]["strip"]
        fs = float(st.get("fs") or 250)
        x = np.asarray(st["samples_uv"], dtype=float) / 1000.0
        x = x - np.median(x)
        t = np.arange(len(x)) / fs
        fig = fig if fig is not None else self.figure(1.9)
        ax = fig.subplots()
        for g in np.arange(0, t[-1] + 0.2, 0.2):
            ax.axvline(g, color="#f4b6b6", lw=0.5)
        for g in np.arange(-2, 2.01, 0.5):
            ax.axhline(g, color="#f4b6b6", lw=0.5)
        ax.plot(t, np.clip(x, -2, 2), color="black", lw=0.7)
        ax.set_xlim(0, t[-1])
        ax.set_ylim(-2, 2)
        ax.set_ylabel("mV")
        cond = alert["condition"]
        ax.set_title(
            f"{self.t('cond.' + cond)} ({cond}) · {_ts(alert['opened_at']):%m-%d %H:%M} · "
            f"{self.t('tier.' + alert['tier'])}",
            loc="left",
        )
        ax.set_xticks(np.arange(0, t[-1] + 0.01, 1.0))
        return fig

    def screen_strip(self, s: dict, fs: float, samples: Any, fig=None):  # type: ignore[no-untyped-def]
        """A screening strip's first seconds on a 0.2 s / 0.5 mV grid, titled with its result."""
        import numpy as np

        x = np.asarray(samples, dtype=float) / 1000.0
        x = x - np.median(x)
        t = np.arange(len(x)) / fs
        fig = fig if fig is not None else self.figure(1.9)
        ax = fig.subplots()
        for g in np.arange(0, t[-1] + 0.2, 0.2):
            ax.axvline(g, color="#f4b6b6", lw=0.5)
        for g in np.arange(-2, 2.01, 0.5):
            ax.axhline(g, color="#f4b6b6", lw=0.5)
        ax.plot(t, np.clip(x, -2, 2), color="black", lw=0.7)
        ax.set_xlim(0, t[-1])
        ax.set_ylim(-2, 2)
        ax.set_ylabel("mV")
        hr = f" · {s['hr_bpm']:.0f}/min" if s.get("hr_bpm") else ""
        ax.set_title(
            f"{self.t('report.screening')}: {self.t('screen.label.' + s['label'])}{hr} · {_ts(s['ts']):%m-%d %H:%M}",
            loc="left",
        )
        ax.set_xticks(np.arange(0, t[-1] + 0.01, 1.0))
        return fig

    def acks(self, d: ReportData, fig=None):  # type: ignore[no-untyped-def]
        fig = fig if fig is not None else self.figure(2.4)
        ax = fig.subplots()
        per = d.stats["ack"]
        tiers = [t for t in TIERS if per[t]["reached"] or per[t]["acked"]]
        med = [(per[t]["median_s"] or 0) / 60 for t in tiers]
        mx = [(per[t]["max_s"] or 0) / 60 for t in tiers]
        y = list(range(len(tiers)))
        ax.barh([v + 0.2 for v in y], mx, height=0.38, color="#ffab91", label=self.t("report.ack_max"))
        ax.barh([v - 0.2 for v in y], med, height=0.38, color="#1565c0", label=self.t("report.ack_median"))
        ax.set_yticks(y, [f"{self.t('tier.' + t)} ({per[t]['acked']}/{per[t]['reached']})" for t in tiers])
        ax.set_xlabel("min")
        ax.invert_yaxis()
        ax.legend(fontsize=7, frameon=False, loc="lower right")
        ax.set_title(self.t("report.alerts"), loc="left")
        ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.6)
        return fig

    def drawers(self, d: ReportData) -> list[tuple[str, float, Any]]:
        """(key, height in inches, draw(fig)) for each plot the data calls for."""
        out: list[tuple[str, float, Any]] = []
        if d.bp:
            out.append(("bp", 3.0, lambda f: self.bp(d, f)))
        if d.stats["glucose"]["n"]:
            out.append(("glucose", 3.0, lambda f: self.glucose(d, f)))
        if d.rhythm:
            out.append(("rhythm", 3.0, lambda f: self.rhythm(d, f)))
        for a in [a for a in d.stats["events"] if isinstance(a.get("evidence", {}).get("strip"), dict)][:MAX_STRIPS]:
            out.append((f"strip-{a['alert_id']}", 1.9, lambda f, a=a: self.strip(a, f)))
        for s in d.strips:
            if s["key"] in d.strip_samples:
                fs, x = d.strip_samples[s["key"]]
                out.append((f"screen-{s['key']}", 1.9, lambda f, s=s, fs=fs, x=x: self.screen_strip(s, fs, x, f)))
        if any(v["reached"] or v["acked"] for v in d.stats["ack"].values()):
            out.append(("acks", 2.4, lambda f: self.acks(d, f)))
        return out

    def figures(self, d: ReportData) -> list[tuple[str, Any]]:
        return [(key, draw(self.figure(h))) for key, h, draw in self.drawers(d)]


def _png(fig) -> str:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- HTML and PDF


def _glu(v: float) -> str:
    return "LO" if v <= 0.0 else f"{v:.1f} mmol/L"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def summary_rows(d: ReportData, lang: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The numbers, section by section, as (label, value) pairs (the same in HTML and PDF)."""
    t = i18n.translator(lang)
    s = d.stats
    out: list[tuple[str, list[tuple[str, str]]]] = []
    b = s["bp"]
    if b["n"]:
        out.append(
            (
                t("report.bp"),
                [
                    (t("report.bp_n"), str(b["n"])),
                    (t("report.bp_mean"), f"{b['mean_sys']:.0f}/{b['mean_dia']:.0f} mmHg"),
                    (t("report.bp_control"), f"{b['control_rate']:.0%} ({b['controlled']}/{b['n']})"),
                    ("≥180/110", str(b["crisis"])),
                ],
            )
        )
    g = s["glucose"]
    if g["n"]:
        out.append(
            (
                t("report.glucose"),
                [
                    (t("report.bp_n"), str(g["n"])),
                    (t("report.bp_mean"), _num(g["mean"], "{:.1f} mmol/L")),
                    (t("report.tir"), _pct(g["tir"])),
                    (t("report.below"), _pct(g["below"])),
                    (t("report.above"), _pct(g["above"])),
                    (t("report.hypo"), str(g["hypo"])),
                    (t("report.hypo_severe"), str(g["hypo_severe"])),
                ],
            )
        )
    r = s["rhythm"]
    if r["minutes"]:
        out.append(
            (
                t("report.ecg"),
                [
                    (t("report.monitored"), i18n.duration_text(lang, r["minutes"] * 60)),
                    (t("report.af_burden"), _pct(r["af_burden"])),
                    (t("report.hr"), f"{_num(r['hr_mean'])} ({_num(r['hr_min'])}–{_num(r['hr_max'])})"),
                    (t("report.events"), str(len(s["events"]))),
                ],
            )
        )
    sc = s["screening"]
    if sc["n"]:
        out.append(
            (
                t("report.screening"),
                [(t("screen.label." + lab), str(n)) for lab, n in sc["labels"].items()]
                + [(t("report.referred"), f"{sc['referred']}/{sc['referred'] + sc['waiting']}")],
            )
        )
    acks = [
        (
            t("tier." + tier),
            f"{v['acked']}/{v['reached']} · {t('report.ack_median')} "
            f"{i18n.duration_text(lang, v['median_s'])} · {t('report.ack_max')} {i18n.duration_text(lang, v['max_s'])}",
        )
        for tier, v in s["ack"].items()
        if v["reached"] or v["acked"]
    ]
    if acks:
        out.append((t("report.alerts"), acks))
    return out


def render_html_data(d: ReportData, lang: str = "zh") -> str:
    t = i18n.translator(lang)
    plotter = _Plotter(lang)
    figs = plotter.figures(d)
    esc = html.escape
    parts = [
        f"""<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(t("report.title"))} {esc(d.patient_id)}</title>
<style>
body{{font:14px/1.5 "Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",sans-serif;max-width:900px;margin:16px auto;padding:0 12px;color:#222}}
h1{{font-size:22px;margin-bottom:2px}} h2{{font-size:17px;margin:22px 0 6px;border-bottom:2px solid #0d3b66}}
table{{border-collapse:collapse;margin:6px 0}} td,th{{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}}
.muted{{color:#777}} img{{max-width:100%}} .kpi{{display:inline-block;margin:4px 14px 4px 0}} .kpi b{{font-size:20px}}
@media print{{h2{{break-after:avoid}} img{{break-inside:avoid}}}}
</style></head><body>
<h1>{esc(t("report.title"))} · {esc(d.patient_id)}</h1>
<p class="muted">{esc(t("clinic"))} {esc(d.clinic)} · {esc(t("report.period"))} {d.t0:%Y-%m-%d %H:%M} – {d.t1:%Y-%m-%d %H:%M}
 · {esc(t("report.generated"))} {esc(iso(d.t1)[:16].replace("T", " "))}</p>"""
    ]
    rows = summary_rows(d, lang)
    if not rows:
        parts.append(f"<p>{esc(t('report.none'))}</p>")
    fig_by = dict(figs)
    sections = {
        "report.bp": "bp",
        "report.glucose": "glucose",
        "report.ecg": "rhythm",
        "report.alerts": "acks",
        "report.screening": "screening",
    }
    for title, kv in rows:
        parts.append(
            f"<h2>{esc(title)}</h2><table>"
            + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in kv)
            + "</table>"
        )
        key = next((v for k, v in sections.items() if t(k) == title), None)
        if key and key in fig_by:
            parts.append(f'<img alt="{esc(title)}" src="data:image/png;base64,{_png(fig_by[key])}">')
        if key == "rhythm":
            parts.append(_events_html(d, lang, figs))
        if key == "screening":
            parts.append(_screening_html(d, lang, figs))
    if d.stats["glucose"].get("episodes"):
        parts.append(
            f"<h2>{esc(t('report.hypo'))}</h2><table>"
            + "".join(
                f"<tr><td>{esc(e['start'][:16].replace('T', ' '))}</td><td>{_glu(e['lowest'])}</td>"
                f"<td>{'⚠ ' + esc(t('report.hypo_severe')) if e['severe'] else ''}</td></tr>"
                for e in d.stats["glucose"]["episodes"]
            )
            + "</table>"
        )
    parts.append(_alert_table_html(d, lang))
    parts.append("</body></html>")
    return "\n".join(parts)


def _events_html(d: ReportData, lang: str, figs: list) -> str:
    t = i18n.translator(lang)
    events = d.stats["events"]
    if not events:
        return ""
    fig_by = dict(figs)
    out = [f"<h3>{html.escape(t('report.events'))}</h3><table>"]
    for a in events:
        out.append(
            f"<tr><td>{a['opened_at'][:16].replace('T', ' ')}</td><td>{html.escape(t('cond.' + a['condition']))}"
            f"</td><td>{html.escape(t('tier.' + a['tier']))}</td><td>{html.escape(t('state.' + a['state']))}</td></tr>"
        )
    out.append("</table>")
    for a in events:
        key = f"strip-{a['alert_id']}"
        if key in fig_by:
            out.append(f'<img alt="ECG {html.escape(a["condition"])}" src="data:image/png;base64,{_png(fig_by[key])}">')
    return "".join(out)


def _screening_html(d: ReportData, lang: str, figs: list) -> str:
    t = i18n.translator(lang)
    esc = html.escape
    fig_by = dict(figs)
    rows = []
    for s in d.strips:
        hr = f"{s['hr_bpm']:.0f}/min" if s.get("hr_bpm") and s["label"] != "noisy" else "–"
        ref = (
            f"{esc(t('report.referred'))} · {esc(s['referred_by'])} {esc(s['referred_at'][5:16].replace('T', ' '))}"
            if s["referred_at"]
            else (esc(t("screen.retake")) if s["label"] == "noisy" else "")
        )
        rows.append(
            f'<tr class="screen-{esc(s["label"])}"><td>{esc(s["ts"][:16].replace("T", " "))}</td>'
            f"<td><b>{esc(t('screen.label.' + s['label']))}</b></td><td>{hr}</td>"
            f"<td>{s['confidence']:.0%}</td><td>{ref}</td></tr>"
        )
    out = [f'<table id="screening">{"".join(rows)}</table>']
    for s in d.strips:
        key = f"screen-{s['key']}"
        if key in fig_by:
            out.append(f'<img alt="ECG {esc(s["label"])}" src="data:image/png;base64,{_png(fig_by[key])}">')
    return "".join(out)


def _alert_table_html(d: ReportData, lang: str) -> str:
    t = i18n.translator(lang)
    alerts = d.stats["alerts_in_period"]
    if not alerts:
        return ""
    rows = []
    for a in alerts:
        ack = next((tr for tr in a["transitions"] if tr["what"] == "acknowledged"), None)
        rows.append(
            f"<tr><td>{a['opened_at'][:16].replace('T', ' ')}</td><td>{html.escape(t('cond.' + a['condition']))}</td>"
            f"<td>{html.escape(t('sev.' + a['severity']))}</td><td>{html.escape(t('tier.' + a['tier']))}</td>"
            f"<td>{html.escape(t('state.' + a['state']))}</td>"
            f"<td>{html.escape(ack['detail'].get('by', '')) if ack else html.escape(t('report.unacked'))}</td></tr>"
        )
    return f"<h2>{html.escape(t('report.n_alerts'))} ({len(alerts)})</h2><table>{''.join(rows)}</table>"


def render_pdf_data(d: ReportData, lang: str = "zh") -> bytes:
    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages

    plotter = _Plotter(lang)
    lang = plotter.lang  # English when no CJK font is installed
    t = i18n.translator(lang)
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": f"vitalgate report {d.patient_id}", "Creator": "vitalgate"}) as pdf:
        from matplotlib.figure import Figure

        page = Figure(figsize=(8.27, 11.69), dpi=100)  # A4
        y = 0.95
        page.text(0.07, y, f"{t('report.title')} · {d.patient_id}", fontsize=18, fontweight="bold")
        y -= 0.03
        page.text(
            0.07,
            y,
            f"{t('clinic')} {d.clinic} · {t('report.period')} {d.t0:%Y-%m-%d} – {d.t1:%Y-%m-%d %H:%M}",
            fontsize=9,
            color="#555",
        )
        y -= 0.04
        rows = summary_rows(d, lang)
        if not rows:
            page.text(0.07, y, t("report.none"), fontsize=11)
        for title, kv in rows:
            page.text(0.07, y, title, fontsize=13, fontweight="bold", color="#0d3b66")
            y -= 0.025
            for k, v in kv:
                page.text(0.09, y, k, fontsize=10)
                page.text(0.45, y, v, fontsize=10)
                y -= 0.021
            y -= 0.015
        for e in d.stats["glucose"].get("episodes", [])[:10]:
            page.text(
                0.09,
                y,
                f"{t('report.hypo')}: {e['start'][:16].replace('T', ' ')}  {_glu(e['lowest'])}"
                f"{'  (' + t('report.hypo_severe') + ')' if e['severe'] else ''}",
                fontsize=9,
            )
            y -= 0.019
        pdf.savefig(page)
        # The plots on A4 pages, stacked until a page is full: a 7-day report is two or three pages.
        pending = plotter.drawers(d)
        while pending:
            chunk, used = [], 0.0
            while pending and used + pending[0][1] <= 10.6:
                chunk.append(pending.pop(0))
                used += chunk[-1][1]
            sheet = Figure(figsize=(8.27, 11.69), dpi=100, layout="constrained")
            ratios = [h for _, h, _ in chunk] + [max(0.01, 11.2 - used)]
            subs = sheet.subfigures(len(chunk) + 1, 1, height_ratios=ratios)
            if not isinstance(subs, np.ndarray):  # one row comes back as a lone SubFigure
                subs = np.array([subs])
            for sub, (_, _, draw) in zip(subs, chunk):
                draw(sub)
            pdf.savefig(sheet)
    return buf.getvalue()


def render_html(storage: Path, clinic: str, patient_id: str, period: timedelta, now: datetime, lang: str = "zh") -> str:
    return render_html_data(build_report(storage, clinic, patient_id, period, now), lang)


def render_pdf(
    storage: Path, clinic: str, patient_id: str, period: timedelta, now: datetime, lang: str = "zh"
) -> bytes:
    return render_pdf_data(build_report(storage, clinic, patient_id, period, now), lang)


def write_report(
    storage: Path, clinic: str, patient_id: str, period: timedelta, now: datetime, out_dir: Path, lang: str = "zh"
) -> tuple[Path, Path]:
    """`vitalgate report`: both files, named report-<patient>-<date>.html/.pdf, in `out_dir`."""
    data = build_report(storage, clinic, patient_id, period, now)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"report-{patient_id}-{now:%Y%m%d}"
    html_path, pdf_path = stem.with_suffix(".html"), stem.with_suffix(".pdf")
    html_path.write_text(render_html_data(data, lang), encoding="utf-8")
    pdf_path.write_bytes(render_pdf_data(data, lang))
    return html_path, pdf_path
