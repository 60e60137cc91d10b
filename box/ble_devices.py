"""``vitalgate ble-devices --config gateway.yaml``: virtual BLE devices for a gateway config, no hardware.

Starts a private dbus-daemon with the mock BlueZ and one virtual device per
``ble:`` device in the config, prints the ``DBUS_SYSTEM_BUS_ADDRESS`` line to
give ``vitalgate run``, and plays measurements and dropouts until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from box.config import ConfigError, load_config
from simulators.ble.fleet import BleFleet
from stream.models import parse_duration


async def _main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    fleet = BleFleet(
        seed=args.seed,
        every_s=parse_duration(args.every).total_seconds(),
        dropouts_s=parse_duration(args.dropouts).total_seconds() if args.dropouts != "off" else None,
    )
    address = await fleet.start()
    made = fleet.add_from_config(config)
    if not made:
        print(f"{args.config}: no device has a `ble:` section; nothing to simulate", file=sys.stderr)
        await fleet.stop()
        return 2
    for device_id, dev in fleet.devices.items():
        print(f"  {device_id:<12} {type(dev).__name__:<18} {dev.address}  {dev.name!r}")
    print(
        f"\nmock BlueZ on a private bus; run the gateway with:\n"
        f"  DBUS_SYSTEM_BUS_ADDRESS='{address}' vitalgate run --config {args.config}\n",
        flush=True,
    )
    fleet.play()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.duration:
            await asyncio.wait_for(stop.wait(), parse_duration(args.duration).total_seconds())
        else:
            await stop.wait()
    except TimeoutError:
        pass
    await fleet.stop()
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", required=True, help="gateway config listing devices with `ble:`")
    ap.add_argument("--every", default="30s", help="cuff measurement / meter record interval (default 30s)")
    ap.add_argument("--dropouts", default="60s", help="mean time between link drops / out-of-range walks, or 'off'")
    ap.add_argument("--duration", default=None, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-level", default="WARNING")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))
