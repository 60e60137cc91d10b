"""The patient report (`vitalgate report`) and the numbers behind it, on a clinic storage seeded with a known week.

`seed_clinic` is also used by the console and FHIR tests: one patient (p-0001) with a cuff, a meter and an
ECG patch whose week is known exactly, and a quiet one (p-0002).
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.clinic import NOW, seed_clinic
from tests.support.paths import REPO

# ---------------------------------------------------------------- the numbers


@pytest.fixture
def clinic(tmp_path: Path) -> tuple[Path, dict]:
    storage = tmp_path / "var"
    return storage, seed_clinic(storage)


def test_report_numbers_match_the_known_week(clinic):
    from console.patient_report import build_report

    storage, ids = clinic
    d = build_report(storage, "c1", "p-0001", timedelta(days=7), NOW)
    bp = d.stats["bp"]
    assert bp["n"] == 14 and bp["controlled"] == 8 and math.isclose(bp["control_rate"], 8 / 14)
    assert bp["crisis"] == 0
    g = d.stats["glucose"]
    # 7 meter values plus one "LO": in range 5.6, 6.0, 7.0; below 3.5, 3.2, 2.8, LO; above 12.0.
    assert g["n"] == 8 and math.isclose(g["tir"], 3 / 8) and math.isclose(g["below"], 4 / 8)
    assert g["hypo"] == 3 and g["hypo_severe"] == 2  # (3.5, 3.2), (2.8), (LO)
    r = d.stats["rhythm"]
    assert r["minutes"] == 120 and math.isclose(r["af_burden"], 30 / 110)
    assert [a["alert_id"] for a in d.stats["events"]] == [ids["af"]]
    ack = d.stats["ack"]
    assert ack["township"]["acked"] == 1 and ack["township"]["median_s"] == 12 * 60
    assert ack["village"]["acked"] == 1 and ack["village"]["median_s"] == 40 * 60
    assert ack["township"]["reached"] == 2  # the AF alert and the open crisis


def test_report_cli_writes_html_and_pdf(clinic, tmp_path):
    storage, _ = clinic
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"clinic: c1\nstorage: {{path: {storage}}}\npatients:\n  - id: p-0001\n    devices:\n"
        f"      - {{id: bp-0001, kind: blood_pressure}}\n"
    )
    out = tmp_path / "reports"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "report",
            "--patient",
            "p-0001",
            "--period",
            "30d",
            "--config",
            str(cfg),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    html = next(out.glob("report-p-0001-*.html")).read_text(encoding="utf-8")
    pdf = next(out.glob("report-p-0001-*.pdf")).read_bytes()
    assert "健康报告" in html and "控制率" in html and "房颤负荷" in html
    assert html.count("data:image/png;base64,") >= 4  # BP, glucose, rhythm, the AF strip, ack delays
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2
    assert str(out) in proc.stdout

    bad = subprocess.run(
        [sys.executable, "-m", "box.cli", "report", "--patient", "p-9999", "--config", str(cfg), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "p-9999" in bad.stderr


def test_report_in_english_and_for_a_patient_without_data(clinic):
    from console.patient_report import render_html, render_pdf

    storage, _ = clinic
    html = render_html(storage, "c1", "p-0001", timedelta(days=7), NOW, lang="en")
    assert "Health report" in html and "Control rate (&lt;140/90)" in html and "57%" in html
    empty = render_html(storage, "c1", "p-0002", timedelta(hours=1), NOW, lang="en")
    assert "No data in this period." in empty
    assert render_pdf(storage, "c1", "p-0002", timedelta(hours=1), NOW, lang="zh").startswith(b"%PDF")
