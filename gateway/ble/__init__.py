"""BLE ingress: the gateway connects to devices itself through BlueZ (bleak).

Modules: ``connection`` (discovery, retry, connection cap, re-subscription),
``profiles`` (what to subscribe to and how values become readings),
``ecg_assembly`` (short ECG notifications -> 1 s frames), ``racp_watermarks``
(glucose back-fill position per meter), ``ingress`` (``BleIngress``: all
configured devices, device_offline). See docs/ble.md.

This package module stays free of bleak imports: the config validator uses it.
"""

from __future__ import annotations

from stream.models import DeviceKind

# Which configured device kinds each BLE profile can feed (KINDS_FOR_DEVICE in
# stream.models says which readings a kind accepts).
PROFILE_DEVICE_KINDS: dict[str, frozenset[DeviceKind]] = {
    "blood_pressure": frozenset({DeviceKind.BLOOD_PRESSURE}),
    "glucose": frozenset({DeviceKind.GLUCOSE}),
    "heart_rate": frozenset({DeviceKind.ECG, DeviceKind.SPO2}),
    "polar_h10_ecg": frozenset({DeviceKind.ECG}),
    "vendor_ecg": frozenset({DeviceKind.ECG}),
}
