"""The `ble:` part of the config: profiles must fit the device kind, adapter settings are validated."""

from __future__ import annotations

import pytest

from box.config import ConfigError, load_config_text

BASE = """clinic: c1
patients:
  - id: p-0001
    devices:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "gw.yaml")
    return [str(p) for p in err.value.problems]


def test_a_profile_must_fit_the_device_kind_with_the_line_of_the_device() -> None:
    text = BASE + '      - {id: ecg-0001, kind: glucose, ble: {address: "C0:26:DA:01:02:03", profile: vendor_ecg}}\n'
    assert problems(text) == [
        "gw.yaml:5: patients.0.devices.0: BLE profile 'vendor_ecg' does not fit a glucose device (use kind: ecg)"
    ]


def test_ble_settings_and_every_profile_validate() -> None:
    text = (
        "ble: {adapter: hci1, max_connections: 3}\n"
        + BASE
        + "".join(
            f'      - {{id: d-{i}, kind: {kind}, ble: {{name: "Dev {i}", profile: {profile}}}}}\n'
            for i, (kind, profile) in enumerate(
                [
                    ("blood_pressure", "blood_pressure"),
                    ("glucose", "glucose"),
                    ("ecg", "heart_rate"),
                    ("spo2", "heart_rate"),
                    ("ecg", "polar_h10_ecg"),
                    ("ecg", "vendor_ecg"),
                ]
            )
        )
    )
    cfg = load_config_text(text, "gw.yaml")
    assert (cfg.ble.adapter, cfg.ble.max_connections) == ("hci1", 3)
    assert [d.ble.profile for d in cfg.patients[0].devices if d.ble] == [
        "blood_pressure",
        "glucose",
        "heart_rate",
        "heart_rate",
        "polar_h10_ecg",
        "vendor_ecg",
    ]


def test_bad_ble_settings_are_reported() -> None:
    text = "ble: {adapter: bluetooth0, max_connections: 0, scan: true}\n" + BASE + "      - {id: b, kind: ecg}\n"
    found = problems(text)
    assert any(p.startswith("gw.yaml:1: ble.adapter:") for p in found)
    assert any(p.startswith("gw.yaml:1: ble.max_connections:") for p in found)
    assert any(p.startswith("gw.yaml:1: ble.scan: unknown key") for p in found)
