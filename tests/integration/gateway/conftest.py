"""The BLE tests' mock BlueZ on a private dbus-daemon."""

from tests.support.ble import bluez  # noqa: F401 (a fixture)
