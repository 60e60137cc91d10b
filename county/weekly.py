"""The county's figures for its weekly meeting, and the report it downloads.

Next to the alerts per tier and clinic and the time to acknowledge per tier (county/store.py), per
village and per clinic:

* **BP control rate**: of the patients with enough home BP readings in the period, the share whose
  mean is below the home threshold for hypertension, 135/85 mmHg (Chinese Hypertension Guideline
  2018/2024: hypertension at home >= 135/85; docs/spec/clinical-rules.md, Blood pressure). The
  threshold and the "enough readings" rule are the clinic's own defaults for `bp_high`
  (`stream.thresholds.BpThresholds`: `home_mean_systolic`/`_diastolic` 135/85,
  `home_mean_min_readings` 6; clinical-rules.md, Home mean), so the county judges a week as the
  clinic's rule judges it. Controlled means both means below: `bp_high`'s mean is high when either
  is at or above. Questionable readings (body movement, loose cuff, improper position) are left
  out, as the clinic's rules leave them out. The county sees no diagnoses: a patient with home BP
  readings is counted as one of the programme's hypertensive patients (home cuffs go to them).
* **AF found**: patients with an `af` or `af_rvr` alert opened in the period (`af_rvr` holds `af`
  while it is active, so a patient with a fast AF may never get an `af` alert), or a screening strip
  (a reading of kind `ecg_strip`) labelled `af` recorded in the period (docs/ecg-screening.md).

Villages come from the clinics' statuses (`villages`: village -> pseudonymous patient ids, from the
gateway config's `patients[].labels.village`; docs/spec/public-surface.md, Status). A patient no
status has listed is counted under village None (未标注村) so the rows add up to the clinic's.

The arithmetic is pure (`by_place`); `meeting_figures` asks the store.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from stream.thresholds import BpThresholds

AF_CONDITIONS = ("af", "af_rvr")


@dataclass(frozen=True)
class BpControl:
    """What "controlled" means, in mmHg and readings; the clinic's `bp_high` defaults."""

    systolic_below: float
    diastolic_below: float
    min_readings: int

    def __post_init__(self) -> None:
        if not (self.systolic_below > 0 and self.diastolic_below > 0 and self.min_readings >= 1):
            raise ValueError("thresholds must be positive and min_readings at least 1")

    @classmethod
    def clinic_default(cls) -> BpControl:
        t = BpThresholds()
        return cls(t.home_mean_systolic, t.home_mean_diastolic, t.home_mean_min_readings)


BP_CONTROL = BpControl.clinic_default()


def _empty(**key: object) -> dict:
    return {
        **key,
        "patients": 0,
        "bp_patients": 0,
        "bp_controlled": 0,
        "bp_control_rate": None,
        "bp_too_few_readings": 0,
        "af_found": 0,
        "af_by_alert": 0,
        "af_by_strip": 0,
    }


def by_place(
    bp_means: Iterable[tuple[str, str, int, float, float]],
    af_alert: set[tuple[str, str]],
    af_strip: set[tuple[str, str]],
    villages: dict[tuple[str, str], str],
    rule: BpControl = BP_CONTROL,
) -> tuple[list[dict], list[dict]]:
    """(per village, per clinic) rows: patients on the rosters, BP control and AF found.

    `bp_means`: (clinic, patient, n, mean systolic, mean diastolic) over the period's unflagged home
    readings; `af_alert` / `af_strip`: (clinic, patient) found by an alert / a strip; `villages`:
    (clinic, patient) -> village. Rows sorted by village (None last) / clinic."""
    vrows: dict[str | None, dict] = {}
    crows: dict[str, dict] = {}
    vclinics: dict[str | None, set[str]] = {}

    def rows_of(clinic: str, patient: str) -> tuple[dict, dict]:
        village = villages.get((clinic, patient))
        vclinics.setdefault(village, set()).add(clinic)
        v = vrows.setdefault(village, _empty(village=village))
        c = crows.setdefault(clinic, _empty(clinic=clinic))
        return v, c

    for clinic, patient in villages:
        for row in rows_of(clinic, patient):
            row["patients"] += 1
    for clinic, patient, n, sys_mean, dia_mean in bp_means:
        for row in rows_of(clinic, patient):
            if n < rule.min_readings:
                row["bp_too_few_readings"] += 1
                continue
            row["bp_patients"] += 1
            if sys_mean < rule.systolic_below and dia_mean < rule.diastolic_below:
                row["bp_controlled"] += 1
    for key in af_alert | af_strip:
        for row in rows_of(*key):
            row["af_found"] += 1
            row["af_by_alert"] += key in af_alert
            row["af_by_strip"] += key in af_strip
    for row in [*vrows.values(), *crows.values()]:
        if row["bp_patients"]:
            row["bp_control_rate"] = round(row["bp_controlled"] / row["bp_patients"], 3)
    for village, row in vrows.items():
        row["clinics"] = sorted(vclinics[village])
    if None in vrows:
        vrows[None]["patients"] = None  # nobody lists them: how many there are is not known
    per_village = sorted(vrows.values(), key=lambda r: (r["village"] is None, r["village"] or ""))
    per_clinic = [crows[c] for c in sorted(crows)]
    return per_village, per_clinic


def meeting_figures(store, since_epoch: float) -> dict:  # type: ignore[no-untyped-def]
    """Everything the weekly meeting looks at, since `since_epoch` (device time for readings, the
    clinic's opening time for alerts)."""
    per_village, per_clinic = by_place(
        store.home_bp_means(since_epoch),
        store.af_alert_patients(since_epoch, AF_CONDITIONS),
        store.af_strip_patients(since_epoch),
        store.patient_villages(),
    )
    return {
        **store.weekly(since_epoch),
        "bp_control": {
            "systolic_below_mmhg": BP_CONTROL.systolic_below,
            "diastolic_below_mmhg": BP_CONTROL.diastolic_below,
            "min_readings": BP_CONTROL.min_readings,
        },
        "by_village": per_village,
        "by_clinic": per_clinic,
    }


UNLABELLED_VILLAGE = "未标注村"
PLACE_COLUMNS = [
    "登记患者 patients",
    "血压评估患者 bp_patients",
    "血压控制达标 bp_controlled",
    "血压控制率 bp_control_rate_%",
    "读数不足 bp_too_few_readings",
    "发现房颤 af_found",
    "其中告警 af_by_alert",
    "其中筛查 af_by_strip",
]


def _place_cells(row: dict) -> list:
    rate = "" if row["bp_control_rate"] is None else round(100 * row["bp_control_rate"], 1)
    return [
        "" if row["patients"] is None else row["patients"],
        row["bp_patients"],
        row["bp_controlled"],
        rate,
        row["bp_too_few_readings"],
        row["af_found"],
        row["af_by_alert"],
        row["af_by_strip"],
    ]


def weekly_csv(county: str, figures: dict) -> str:
    """The weekly report as a spreadsheet opens it (UTF-8 with a BOM, so Excel reads the Chinese)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([f"县级监测中心 {county} 周报", f"近 {figures['days']} 天"])
    w.writerow([])
    w.writerow(["诊所 clinic", "级别 tier", "告警数 alerts"])
    for row in figures["alerts_by_clinic_tier"]:
        w.writerow([row["clinic"], row["tier"], row["alerts"]])
    w.writerow([])
    w.writerow(["级别 tier", "已确认 acknowledged", "确认用时中位数（秒） median_s", "90% 用时（秒） p90_s"])
    for tier, v in figures["time_to_ack_by_tier"].items():
        w.writerow([tier, v["acknowledged"], v["median_s"], v["p90_s"]])
    bp = figures["bp_control"]
    w.writerow([])
    w.writerow(
        [
            f"血压控制：家庭血压均值 < {bp['systolic_below_mmhg']:g}/{bp['diastolic_below_mmhg']:g} mmHg，"
            f"至少 {bp['min_readings']} 次有效测量 (home BP mean below {bp['systolic_below_mmhg']:g}/"
            f"{bp['diastolic_below_mmhg']:g} mmHg, at least {bp['min_readings']} valid readings)"
        ]
    )
    w.writerow(["村 village", "诊所 clinics", *PLACE_COLUMNS])
    for row in figures["by_village"]:
        w.writerow([row["village"] or UNLABELLED_VILLAGE, " ".join(row["clinics"]), *_place_cells(row)])
    w.writerow([])
    w.writerow(["诊所 clinic", *PLACE_COLUMNS])
    for row in figures["by_clinic"]:
        w.writerow([row["clinic"], *_place_cells(row)])
    return "\ufeff" + out.getvalue()
