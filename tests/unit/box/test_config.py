"""Config loading and `vitalgate check-config` (docs/spec/public-surface.md §Config file).

A field technician edits this file; every problem must be reported at once as
`PATH:LINE: dotted.field: what is wrong`, pointing at the line to fix.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from box import cli
from box.config import ConfigError, GatewayConfig, load_config, load_config_text
from dispatch.escalation import ConditionEscalation
from dispatch.routing import DEFAULT_ROUTES, RoutingTable
from stream.models import Condition, DeviceKind, Finding, Tier, now_local
from stream.thresholds import Thresholds
from tests.support.paths import REPO

# Exactly the keys the contract fixes, nothing else.
MINIMAL = """\
clinic: demo-clinic
broker:
  host: 127.0.0.1
  port: 1883
storage:
  path: ./var
patients:
  - id: p-0001
    devices:
      - {id: bp-0001, kind: blood_pressure}
      - {id: glu-0001, kind: glucose}
      - {id: ecg-0001, kind: ecg, ble: {address: "C0:26:DA:01:02:03", profile: vendor_ecg}}
escalation:
  ack_timeout: {village: 4h, township: 30m, county: 10m}
uplink:
  host: county.example
  port: 1883
"""


def problems_of(text: str, path: str = "site.yaml") -> list[str]:
    """The `PATH:LINE: field: message` lines a technician would see."""
    with pytest.raises(ConfigError) as exc:
        load_config_text(textwrap.dedent(text), path)
    return [str(p) for p in exc.value.problems]


def single_problem(text: str) -> str:
    lines = problems_of(text)
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------- valid files


def test_minimal_contract_config_loads():
    cfg = load_config_text(MINIMAL, "minimal.yaml")
    assert cfg.clinic == "demo-clinic"
    assert (cfg.broker.host, cfg.broker.port) == ("127.0.0.1", 1883)
    assert cfg.storage.path == Path("./var")
    assert cfg.uplink is not None and (cfg.uplink.host, cfg.uplink.port) == ("county.example", 1883)
    [patient] = cfg.patients
    assert patient.id == "p-0001"
    assert [(d.id, d.kind) for d in patient.devices] == [
        ("bp-0001", DeviceKind.BLOOD_PRESSURE),
        ("glu-0001", DeviceKind.GLUCOSE),
        ("ecg-0001", DeviceKind.ECG),
    ]
    ble = patient.devices[2].ble
    assert ble is not None and (ble.address, ble.profile) == ("C0:26:DA:01:02:03", "vendor_ecg")


def test_minimal_config_gets_domain_default_thresholds():
    cfg = load_config_text(MINIMAL)
    th = cfg.thresholds
    assert th == Thresholds()
    assert (th.bp.crisis_systolic, th.bp.crisis_diastolic) == (180, 110)
    assert (th.bp.high_systolic, th.bp.high_diastolic) == (160, 100)
    assert (th.bp.crisis_confirm_min_gap, th.bp.crisis_confirm_max_gap) == (timedelta(minutes=1), timedelta(minutes=5))
    assert (th.glucose.hypo, th.glucose.hypo_severe) == (3.9, 3.0)
    assert (th.glucose.hyper, th.glucose.hyper_crisis, th.glucose.hyper_hhs) == (13.9, 16.7, 33.3)
    assert (th.spo2.low, th.spo2.persist) == (90, timedelta(seconds=60))
    assert th.backfill_age == timedelta(hours=1)


def test_minimal_config_gets_domain_default_escalation():
    esc = load_config_text(MINIMAL).escalation
    assert esc.ack_timeout.for_tier(Tier.VILLAGE) == timedelta(hours=4)
    assert esc.ack_timeout.for_tier(Tier.TOWNSHIP) == timedelta(minutes=30)
    assert esc.ack_timeout.for_tier(Tier.COUNTY) == timedelta(minutes=10)
    assert esc.high_severity_village == timedelta(minutes=30)
    assert esc.conditions[Condition.HYPOGLYCEMIA_SEVERE] == ConditionEscalation(
        at=Tier.TOWNSHIP, timeout=timedelta(minutes=10), to=Tier.EMERGENCY
    )


def test_minimal_config_uses_default_routing_table():
    cfg = load_config_text(MINIMAL)
    assert cfg.routes == {}
    table = RoutingTable(dict(cfg.routes))
    f = Finding(patient_id="p-0001", condition=Condition.BP_CRISIS, at=now_local())
    assert table.route(f) == DEFAULT_ROUTES[Condition.BP_CRISIS]
    assert table.route(f).tier is Tier.TOWNSHIP


def test_only_clinic_is_required():
    cfg = load_config_text("clinic: c1\n")
    assert cfg.patients == [] and cfg.uplink is None
    assert (cfg.broker.host, cfg.broker.port) == ("127.0.0.1", 1883)


def test_route_override_replaces_only_that_row():
    cfg = load_config_text("clinic: c1\nroutes:\n  bp_high: {tier: township, severity: high}\n")
    table = RoutingTable(dict(cfg.routes))
    now = now_local()
    assert table.route(Finding(patient_id="p", condition=Condition.BP_HIGH, at=now)).tier is Tier.TOWNSHIP
    assert table.route(Finding(patient_id="p", condition=Condition.BP_CRISIS, at=now)).tier is Tier.TOWNSHIP
    assert table.route(Finding(patient_id="p", condition=Condition.ASYSTOLE, at=now)).tier is Tier.EMERGENCY


def test_patient_threshold_override_keeps_other_defaults():
    cfg = load_config_text(
        "clinic: c1\n"
        "thresholds:\n"
        "  glucose: {hypo: 4.0}\n"
        "patients:\n"
        "  - id: p-1\n"
        "    thresholds:\n"
        "      bp: {crisis_systolic: 170}\n"
    )
    merged = cfg.thresholds.with_override(cfg.patients[0].thresholds)
    assert merged.bp.crisis_systolic == 170
    assert merged.bp.crisis_diastolic == 110
    # The clinic-wide value survives; only the field the patient wrote changes.
    assert merged.glucose.hypo == 4.0
    assert merged.glucose.hypo_severe == 3.0


def test_patient_override_invalid_against_clinic_thresholds_is_a_config_error():
    text = (
        "clinic: c1\n"
        "thresholds:\n"
        "  bp: {high_systolic: 175, crisis_systolic: 190}\n"
        "patients:\n"
        "  - id: p-1\n"
        "    thresholds:\n"
        "      bp: {crisis_systolic: 172}\n"  # below the clinic's high_systolic
    )
    line = single_problem(text)
    assert line.startswith("site.yaml:7: patients.0.thresholds.bp")


def test_patient_override_valid_against_clinic_thresholds_is_accepted():
    cfg = load_config_text(
        "clinic: c1\n"
        "thresholds:\n"
        "  bp: {high_systolic: 150, crisis_systolic: 170}\n"
        "patients:\n"
        "  - id: p-1\n"
        "    thresholds:\n"
        "      bp: {crisis_systolic: 160}\n"  # above the clinic's high_systolic of 150
    )
    assert cfg.thresholds.with_override(cfg.patients[0].thresholds).bp.crisis_systolic == 160


# ---------------------------------------------------------------- one problem each, right line


def test_unknown_scalar_key_points_at_its_line():
    assert (
        single_problem(
            """\
        clinic: c1
        broker:
          host: 127.0.0.1
          prot: 1883
        """
        )
        == "site.yaml:4: broker.prot: unknown key (check the spelling; see config/example.yaml)"
    )


def test_unknown_block_key_points_at_the_key_not_its_first_child():
    assert single_problem(
        """\
        clinic: c1
        brokr:
          host: 127.0.0.1
          port: 1883
        """
    ).startswith("site.yaml:2: brokr: unknown key")


def test_wrong_enum_names_the_allowed_values():
    line = single_problem(
        """\
        clinic: c1
        patients:
          - id: p-1
            devices:
              - id: bp-1
                kind: blood_presure
        """
    )
    assert line.startswith("site.yaml:6: patients.0.devices.0.kind: must be ")
    for kind in ("blood_pressure", "glucose", "ecg", "spo2"):
        assert kind in line


def test_bad_duration():
    line = single_problem(
        """\
        clinic: c1
        escalation:
          ack_timeout:
            village: 4x
            township: 30m
        """
    )
    assert line.startswith("site.yaml:4: escalation.ack_timeout.village: ")
    assert "'4x' is not a duration" in line


def test_duplicate_key_reports_the_second_occurrence():
    assert (
        single_problem(
            """\
        clinic: c1
        broker:
          host: 10.0.0.1
          port: 1883
          host: 10.0.0.2
        """
        )
        == "site.yaml:5: broker.host: key appears twice; the later value would silently win"
    )


def test_duplicate_top_level_key():
    assert single_problem("clinic: c1\nstorage: {path: ./a}\nclinic: c2\n") == (
        "site.yaml:3: clinic: key appears twice; the later value would silently win"
    )


def test_resident_id_number_is_refused_as_patient_id():
    resident_id = "11010119900307777X"
    lines = problems_of(
        f"""\
        clinic: c1
        patients:
          - id: p-0001
          - id: "{resident_id}"
        """
    )
    assert lines == [
        "site.yaml:4: patients.1.id: looks like a resident ID number; use a pseudonymous id such as p-0001"
    ]
    # The number itself must never be echoed into logs or the console (docs/spec/china-conventions.md).
    assert resident_id not in "\n".join(lines)


def test_eighteen_digit_quoted_patient_id_is_refused():
    line = single_problem('clinic: c1\npatients:\n  - id: "110101199003077777"\n')
    assert line.startswith("site.yaml:3: patients.0.id: looks like a resident ID number")
    assert "110101199003077777" not in line


def test_eighteen_digit_unquoted_patient_id_is_refused_as_resident_id():
    line = single_problem("clinic: c1\npatients:\n  - id: 110101199003077777\n")
    assert line.startswith("site.yaml:3: patients.0.id: looks like a resident ID number")


def test_unquoted_eighteen_digit_patient_id_is_still_an_error_on_its_line():
    # Whatever the message, the number never gets through and the line is right.
    line = single_problem("clinic: c1\npatients:\n  - id: 110101199003077777\n")
    assert line.startswith("site.yaml:3: patients.0.id: ")
    assert "110101199003077777" not in line


def test_device_bound_to_two_patients_points_at_the_second_binding():
    line = single_problem(
        """\
        clinic: c1
        patients:
          - id: p-1
            devices:
              - {id: glu-1, kind: glucose}
          - id: p-2
            devices:
              - {id: glu-1, kind: glucose}
        """
    )
    assert line.startswith("site.yaml:8: patients.1.devices.0.id: ")
    assert "glu-1" in line


def test_device_bound_to_two_patients_is_an_error():
    line = single_problem(
        """\
        clinic: c1
        patients:
          - id: p-1
            devices:
              - {id: glu-1, kind: glucose}
          - id: p-2
            devices:
              - {id: glu-1, kind: glucose}
        """
    )
    assert "device id 'glu-1' is already bound to patients.0" in line


def test_yaml_syntax_error_reports_line():
    line = single_problem(
        """\
        clinic: c1
        broker:
          host: 127.0.0.1
         port: 1883
        """
    )
    assert line.startswith("site.yaml:4: (yaml): not valid YAML: ")


def test_yaml_syntax_error_in_flow_mapping():
    line = single_problem(
        """\
        clinic: c1
        patients:
          - id: p-1
            devices:
              - {id: bp-1, kind: blood_pressure
          - id: p-2
        """
    )
    assert line.startswith("site.yaml:")
    assert ": (yaml): not valid YAML: " in line
    # The parser notices the unclosed brace at the next line at the latest.
    assert int(line.split(":")[1]) in (5, 6)


def test_file_that_is_not_a_mapping():
    assert single_problem("- clinic: c1\n") == (
        "site.yaml:1: (root): the file must be a mapping of keys (clinic:, broker:, ...)"
    )


def test_missing_clinic_is_reported():
    assert single_problem("broker: {host: a}\n") == "site.yaml:1: clinic: required but missing"


# ---------------------------------------------------------------- all at once

BROKEN = """\
clinic: demo clinic
broker:
  host: 127.0.0.1
  prot: 1883
escalation:
  ack_timeout: {village: 4x, township: 30m, county: 10m}
patients:
  - id: p-1
    devices:
      - {id: bp-1, kind: blood_presure}
  - id: "110101199003077777"
  - id: p-3
    devices:
      - {id: spo2-3, kind: spo2}
      - {id: spo2-3x, kind: spo2, ble: {profile: pulse_ox, address: "C0:26:DA:01:02:03"}}
"""

BROKEN_EXPECTED = [
    ("1", "clinic"),
    ("4", "broker.prot"),
    ("6", "escalation.ack_timeout.village"),
    ("10", "patients.0.devices.0.kind"),
    ("11", "patients.1.id"),
    ("15", "patients.2.devices.1.ble.profile"),
]


def line_and_field(problem_line: str) -> tuple[str, str]:
    """'broken.yaml:4: broker.prot: unknown key' -> ('4', 'broker.prot')."""
    location, field, _message = problem_line.split(": ", 2)
    return location.rsplit(":", 1)[1], field


def test_every_problem_is_reported_at_once_in_line_order():
    lines = problems_of(BROKEN, "broken.yaml")
    assert [line_and_field(l) for l in lines] == BROKEN_EXPECTED
    assert all(l.startswith("broken.yaml:") for l in lines)


def test_duplicate_ids_are_reported_together_with_other_problems():
    lines = problems_of(
        """\
        clinic: c1
        broker:
          prot: 1883
        patients:
          - id: p-1
            devices:
              - {id: glu-1, kind: glucose}
          - id: p-1
            devices:
              - {id: glu-1, kind: glucose}
        """
    )
    text = "\n".join(lines)
    assert "broker.prot" in text
    assert "patient id 'p-1' already used by patients.0" in text
    assert "'glu-1' is already bound to patients.0" in text


def test_duplicate_keys_are_reported_together_with_schema_errors():
    lines = problems_of("clinic: c1\nclinic: c2\nbroker:\n  port: 99999\n")
    assert [line_and_field(l) for l in lines] == [("2", "clinic"), ("4", "broker.port")]


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing)
    [p] = exc.value.problems
    assert p.path == str(missing) and p.field == "(file)" and "cannot read" in p.message


# ---------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "box.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_check_config_cli_exit_2_with_every_problem_on_stdout(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    proc = run_cli("check-config", str(path))
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout.splitlines()
    assert out == problems_of(BROKEN, str(path))
    assert [l.split(": ")[0] for l in out] == [f"{path}:{n}" for n, _ in BROKEN_EXPECTED]


def test_check_config_cli_exit_0_on_valid_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    proc = run_cli("check-config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout and "demo-clinic" in proc.stdout


def test_check_config_main_in_process(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text("clinic: c1\nbroker:\n  host: a\n  host: b\n", encoding="utf-8")

    assert cli.main(["check-config", str(good)]) == 0
    capsys.readouterr()
    assert cli.main(["check-config", str(bad)]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:4: broker.host: key appears twice; the later value would silently win"
    ]


def test_example_config_is_valid():
    example = REPO / "config" / "example.yaml"
    cfg = load_config(example)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.patients, "the example should show at least one patient"
    assert cli.main(["check-config", str(example)]) == 0


def test_secrets_from_files_and_environment_instead_of_the_yaml(tmp_path, monkeypatch) -> None:
    """Issue 16 item 9: systemd credentials (a file) or the environment hold secrets, not the YAML."""
    from box.config import load_config_text

    (tmp_path / "broker.pw").write_text("s3cret-from-a-file\n")
    monkeypatch.setenv("VG_HTTP_TOKEN", "a-token-of-at-least-16-chars")
    cfg = load_config_text(
        f"clinic: c1\nbroker:\n  username: gateway\n  password_file: {tmp_path / 'broker.pw'}\n"
        "http:\n  port: 8080\n  token_env: VG_HTTP_TOKEN\n"
    )
    assert cfg.broker.password == "s3cret-from-a-file"
    assert cfg.http is not None and cfg.http.token == "a-token-of-at-least-16-chars"


def test_a_missing_secret_source_names_the_field_and_line(tmp_path, monkeypatch) -> None:
    from box.config import ConfigError, load_config_text

    monkeypatch.delenv("VG_NOPE", raising=False)
    text = f"clinic: c1\nbroker:\n  password_file: {tmp_path / 'missing'}\nhttp:\n  port: 8080\n  token_env: VG_NOPE\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "gw.yaml")
    msgs = [str(p) for p in exc.value.problems]
    assert any("gw.yaml:3: broker.password_file: cannot read" in m for m in msgs), msgs
    assert any("gw.yaml:6: http.token_env: environment variable VG_NOPE is not set" in m for m in msgs), msgs


@pytest.mark.parametrize("token", ["CHANGE-ME-to-a-long-random-string", "aaaaaaaaaaaaaaaaaaaa", "password1234567890"])
def test_placeholder_or_guessable_tokens_are_refused(token: str) -> None:
    from box.config import ConfigError, load_config_text

    with pytest.raises(ConfigError) as exc:
        load_config_text(f"clinic: c1\nhttp:\n  port: 8080\n  token: {token}\n", "gw.yaml")
    assert any("http.token" in str(p) and "placeholder" in str(p) for p in exc.value.problems)
    assert load_config_text("clinic: c1\nhttp: {port: 8080, token: q7Jx-2vLp9sRkWm4TzYb}\n").http is not None


def test_console_accounts_check_config_names_the_field_of_a_bad_hash_role_name_or_clear_password(tmp_path):
    """Issue 16 item 7: http.accounts holds people's accounts; check-config refuses what cannot sign in safely."""
    from console.accounts import hash_password

    good = hash_password("qing-shan-lv-shui-2026")
    weak = hash_password("qing-shan-lv-shui-2026", log2_n=12, p=1)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        clinic: c1
        http:
          token: q7Jx-2vLp9sRkWm4TzYb
          accounts:
            - {{name: 李医生, role: doctor, password_hash: "{good}"}}
            - {{name: wang, role: nurse, password_hash: "{good}"}}
            - {{name: zhao, role: reader, password_hash: "qing-shan-lv-shui-2026"}}
            - {{name: chen, role: technician, password_hash: "{weak}"}}
            - {{name: 李医生, role: reader, password_hash: "{good}"}}
            - {{name: "dr li", role: doctor, password_hash: "{good}"}}
            - {{name: sun, role: doctor, password: qing-shan-lv-shui-2026}}
        """),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "box.cli", "check-config", str(cfg)], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 2
    lines = out.stdout.splitlines()
    want = [
        (6, "http.accounts.1.role: must be 'doctor', 'technician' or 'reader'"),
        (7, "http.accounts.2.password_hash: not a password hash made by `vitalgate passwd`"),
        (8, "http.accounts.3.password_hash: cost too low"),
        (9, "http.accounts.4.name: account '李医生' already given as http.accounts.0"),
        (10, "http.accounts.5.name: use 1-40 letters or digits"),
        (11, "http.accounts.6: a console account never holds its password"),
    ]
    for line_no, text in want:
        assert any(l.startswith(f"{cfg}:{line_no}: {text}") for l in lines), (text, lines)
    assert len(lines) == len(want), lines
    assert "qing-shan-lv-shui-2026" not in out.stdout  # a clear password is never echoed back
    ok = textwrap.dedent(f"""\
        clinic: c1
        http:
          token: q7Jx-2vLp9sRkWm4TzYb
          accounts: [{{name: 李医生, role: doctor, password_hash: "{good}"}}]
        """)
    assert [a.name for a in load_config_text(ok).http.accounts] == ["李医生"]  # type: ignore[union-attr]
    assert load_config_text("clinic: c1\nhttp: {token: q7Jx-2vLp9sRkWm4TzYb}\n").http.accounts == []  # type: ignore[union-attr]


def test_uplink_client_certificate_needs_its_key_and_tls():
    line = single_problem(MINIMAL + "  tls: true\n  cert_file: /etc/vitalgate/clinic.pem\n")
    assert "uplink" in line and "cert_file and key_file" in line, line
    line = single_problem(MINIMAL + "  cert_file: /etc/vitalgate/clinic.pem\n  key_file: /etc/vitalgate/clinic.key\n")
    assert "needs tls: true" in line, line
    cfg = load_config_text(MINIMAL + "  tls: true\n  cert_file: /c.pem\n  key_file: /c.key\n")
    assert cfg.uplink is not None and (cfg.uplink.cert_file, cfg.uplink.key_file) == ("/c.pem", "/c.key")


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"vitalgate {version('vitalgate')}"


def test_a_developers_command_without_its_extra_says_what_to_install(monkeypatch, capsys):
    """A clinic box installs neither wfdb nor amqtt (extras `records` and `demo`): ecg-eval there
    exits 2 with the pip line instead of a traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "wfdb", None)  # as if not installed
    rec = next((REPO / "tests" / "data").rglob("*.hea"))
    assert cli.main(["ecg-eval", str(rec.with_suffix(""))]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vitalgate[records]'" in err and "wfdb" in err
