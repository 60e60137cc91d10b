"""BLE without hardware: a mock BlueZ (``org.bluez`` over D-Bus) and virtual devices for bleak.

* ``private_bus`` - a private ``dbus-daemon`` (bleak finds it via ``DBUS_SYSTEM_BUS_ADDRESS``);
* ``bluez`` - the mock BlueZ service (adapter, discovery, devices, GATT, notifications);
* ``peripheral`` - the GATT model of one device, with fault injection;
* ``virtual_devices`` - BP cuffs, glucose meters, HR straps, vendor ECG patches, Polar H10;
* ``fleet`` / ``__main__`` - devices for a gateway config, with a schedule (``python -m simulators.ble``).

See docs/ble.md.
"""
