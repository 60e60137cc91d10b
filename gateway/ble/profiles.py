"""BLE profiles: what to read, subscribe to and write on each connect, and how values become readings.

A profile never talks to bleak's connection machinery: it lists its
subscriptions (``DeviceLink`` subscribes to all of them after every
connect), does its reads/writes/procedures through a :class:`BleSession`, and
turns each received value into a reading. Byte decoding is
``gateway.gatt_codecs``; standard characteristics go through
``gateway.ingress.decode_gatt`` and every reading through ``bind`` (in the
outlet), so a BLE reading is exactly what the same bytes on
``vg/{clinic}/device/{id}/gatt/{uuid16}`` would have produced.

Common to all profiles (when the device has them):
* Current Time 0x2A2B is read on connect, before subscribing, to measure the
  device clock's skew against the gateway; it is written when writable and off
  by more than CLOCK_WRITE_MIN_SKEW_S. |skew| > 5 min is logged as a warning
  (docs/spec/clinical-rules.md §Clock skew). Readings keep the device's own timestamps.
* Battery Level 0x2A19 is read on connect (-> a ``battery`` reading; the
  stream rules raise ``battery_low`` at <= 20 %), subscribed to when it can
  notify, else re-read every BATTERY_POLL_S on long connections. Reads happen
  before subscribing because BlueZ also delivers a read value to StartNotify
  subscribers, which would duplicate it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

import numpy as np
from bleak.exc import BleakError

from gateway import gatt_codecs as gc
from gateway.ble import PROFILE_DEVICE_KINDS
from gateway.ble.connection import BleSession, Subscription
from gateway.ble.ecg_assembly import EcgAssembler
from gateway.ble.racp_watermarks import RacpWatermarks
from gateway.gatt_codecs import uuid16
from gateway.ingress import decode_gatt
from stream.models import CHINA_TZ, AnyReading, DeviceKind, HeartRateReading, Rejected

log = logging.getLogger("vitalgate.ble")

BATTERY_LEVEL = uuid16(0x2A19)
CURRENT_TIME = uuid16(0x2A2B)
BP_MEASUREMENT = uuid16(0x2A35)
INTERMEDIATE_CUFF_PRESSURE = uuid16(0x2A36)
GLUCOSE_MEASUREMENT = uuid16(0x2A18)
GLUCOSE_CONTEXT = uuid16(0x2A34)
RACP = uuid16(0x2A52)
HR_MEASUREMENT = uuid16(0x2A37)

CLOCK_WRITE_MIN_SKEW_S = 2.0  # set a writable device clock when it is off by more than this
CLOCK_SKEW_WARN_S = 300.0  # docs/spec/clinical-rules.md §Clock skew: flag |skew| > 5 min
BATTERY_POLL_S = 3600.0
RACP_IDLE_TIMEOUT_S = 10.0  # no record and no response for this long: the back-fill failed
PMD_RESPONSE_TIMEOUT_S = 5.0
POLAR_GAP_TOLERANCE_S = 0.05  # sensor-clock jump beyond this between frames = lost frames
# Default silence before device_offline (DeviceConfig.expected_interval overrides).
# Streaming devices: 30 min (docs/spec/clinical-rules.md §Routing). Cuffs and meters sleep between
# measurements and only advertise when they have something, so by default they
# are never "offline" (as in stream/device_watch.py); missed_readings covers them.
STREAMING_EXPECTED_INTERVAL = timedelta(minutes=30)
SPOT_CHECK_EXPECTED_INTERVAL: timedelta | None = None

_SIG_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_RACP_CANNOT_FILTER = {2, 3, 4, 5, 9}  # op/operator/operand not supported, invalid operator/operand


def short_uuid(uuid: str) -> str:
    """``00002a35-0000-1000-8000-00805f9b34fb`` -> ``2a35`` (the form of decode_gatt and the gatt topic)."""
    u = uuid.lower()
    return u[4:8] if u.startswith("0000") and u.endswith(_SIG_SUFFIX) else u


class Profile:
    """Base: Current Time, Battery, and the emit helpers. Subclasses add their own characteristics."""

    name: ClassVar[str] = ""
    default_expected_interval: ClassVar[timedelta | None] = STREAMING_EXPECTED_INTERVAL

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.clock_skew_s: float | None = None
        self.clock_writes = 0

    @property
    def device_kinds(self) -> frozenset[DeviceKind]:
        return PROFILE_DEVICE_KINDS[self.name]

    # -------------------------------------------------------- what DeviceLink calls

    def subscriptions(self) -> list[Subscription]:
        return [*self.own_subscriptions(), Subscription(BATTERY_LEVEL, required=False)]

    def own_subscriptions(self) -> list[Subscription]:
        return []

    async def read_on_connect(self, session: BleSession) -> None:
        ct = session.char(CURRENT_TIME)
        if ct is not None and "read" in ct.properties:
            try:
                await self._sync_clock(session, "write" in ct.properties)
            except BleakError as exc:
                log.warning("%s: could not read/set the device clock: %s", self.device_id, exc)
        batt = session.char(BATTERY_LEVEL)
        if batt is not None and "read" in batt.properties:
            try:
                data = await session.read(BATTERY_LEVEL)
            except BleakError as exc:
                log.warning("%s: could not read the battery level: %s", self.device_id, exc)
            else:
                await self.emit_gatt(session, BATTERY_LEVEL, data, session.clock())

    async def on_connected(self, session: BleSession) -> None:
        """After the subscriptions: the profile's procedures (back-fill, stream start)."""
        batt = session.char(BATTERY_LEVEL)
        if batt is not None and "read" in batt.properties and not ({"notify", "indicate"} & set(batt.properties)):
            session.spawn(self._poll_battery(session))

    async def on_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        if uuid == BATTERY_LEVEL:
            await self.emit_gatt(session, BATTERY_LEVEL, data, received_at)
        else:
            await self.on_profile_value(session, uuid, data, received_at)

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        log.debug("%s: value on unexpected characteristic %s ignored", self.device_id, uuid)

    async def before_disconnect(self, session: BleSession) -> None:
        """The gateway is closing the link on purpose (shutdown): stop streams politely."""

    async def on_link_lost(self, session: BleSession) -> None:
        """The connection is over (every value received has been handled): flush partial state."""

    # -------------------------------------------------------- helpers

    async def emit(
        self,
        session: BleSession,
        result: AnyReading | Rejected,
        received_at: datetime,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        """Hand on a reading (``on_stored`` runs once the stream core has stored it) or a rejection."""
        if isinstance(result, Rejected):
            session.outlet.reject(
                result if result.device_id else result.model_copy(update={"device_id": self.device_id})
            )
            if on_stored is not None:
                on_stored()
        else:
            await session.outlet.reading(result, received_at, on_stored)

    async def emit_gatt(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        """A standard characteristic: decoded exactly as the MQTT gatt door decodes it."""
        await self.emit(session, decode_gatt(short_uuid(uuid), data, self.device_id, received_at), received_at)

    def malformed(self, session: BleSession, exc: Exception) -> None:
        session.outlet.reject(Rejected(reason="malformed_gatt", detail=str(exc), device_id=self.device_id))

    async def _sync_clock(self, session: BleSession, writable: bool) -> None:
        asked = session.clock()
        data = await session.read(CURRENT_TIME)
        try:
            ct = gc.decode_current_time(data)
        except gc.GattDecodeError as exc:
            self.malformed(session, exc)
            return
        device_time = ct.date_time.to_datetime(CHINA_TZ)
        if device_time is None:
            self.clock_skew_s = None
            log.warning("%s: device clock has no date set", self.device_id)
        else:
            device_time += timedelta(seconds=ct.fractions256 / 256)
            self.clock_skew_s = round((device_time - asked).total_seconds(), 3)
            level = logging.WARNING if abs(self.clock_skew_s) > CLOCK_SKEW_WARN_S else logging.INFO
            log.log(level, "%s: device clock is %+.1f s off the gateway", self.device_id, self.clock_skew_s)
        if writable and (self.clock_skew_s is None or abs(self.clock_skew_s) > CLOCK_WRITE_MIN_SKEW_S):
            await session.write(CURRENT_TIME, gc.encode_current_time(session.clock().astimezone(CHINA_TZ)))
            self.clock_writes += 1
            log.info("%s: device clock set to gateway time", self.device_id)

    async def _poll_battery(self, session: BleSession) -> None:
        while True:
            await asyncio.sleep(BATTERY_POLL_S)
            await self.emit_gatt(session, BATTERY_LEVEL, await session.read(BATTERY_LEVEL), session.clock())


# ---------------------------------------------------------------- blood pressure


class BloodPressureProfile(Profile):
    """0x2A35 (indicate; BlueZ confirms each indication) and the optional 0x2A36 cuff-pressure progress."""

    name = "blood_pressure"
    default_expected_interval = SPOT_CHECK_EXPECTED_INTERVAL

    def own_subscriptions(self) -> list[Subscription]:
        return [Subscription(BP_MEASUREMENT), Subscription(INTERMEDIATE_CUFF_PRESSURE, required=False)]

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        if uuid == BP_MEASUREMENT:
            await self.emit_gatt(session, uuid, data, received_at)
        elif uuid == INTERMEDIATE_CUFF_PRESSURE:
            # Progress while the cuff inflates: proof of life, not a measurement.
            try:
                icp = gc.decode_bp_measurement(data)
            except gc.GattDecodeError as exc:
                self.malformed(session, exc)
                return
            log.debug("%s: cuff at %s mmHg", self.device_id, icp.systolic_mmhg)


# ---------------------------------------------------------------- glucose


@dataclass
class _PendingRecord:
    seq: int
    result: AnyReading | Rejected
    received_at: datetime


class GlucoseProfile(Profile):
    """0x2A18 + 0x2A34 context + RACP back-fill of records stored while out of range.

    On each connect: ask for seq >= watermark + 1 (everything on the first
    connect). If nothing is newer, ask for the last record; a last seq below
    the watermark means the numbering went backwards (meter reset or replaced)
    and everything is fetched again ("report all"), the watermark following
    the new numbering. Records at or below the watermark are never delivered
    twice. The saved watermark only moves past a record once the stream core
    has stored it (and every record delivered before it), so a crash re-fetches
    rather than loses; the store's idempotency key drops the re-fetched copy.
    The gateway never deletes records on the meter. A meter that cannot filter
    by sequence number is asked for all records and filtered here.
    """

    name = "glucose"
    default_expected_interval = SPOT_CHECK_EXPECTED_INTERVAL

    def __init__(self, device_id: str, watermarks: RacpWatermarks) -> None:
        super().__init__(device_id)
        self.watermarks = watermarks
        self._wm: int | None = watermarks.get(device_id)
        self._mode = "live"  # "all" | "after" | "check_last" | "resync" | "live"
        self._pending: _PendingRecord | None = None
        self._response: asyncio.Future[gc.RacpResponse] | None = None
        self._last_traffic = 0.0
        self._delivered = 0
        self._backwards = False
        self._context_subscribed = False
        self._in_flight: list[list[int | bool]] = []  # [seq, stored] in delivery order
        self.resyncs = 0
        self.procedures: list[bytes] = []  # RACP requests written, for status and tests

    @property
    def watermark(self) -> int | None:
        return self._wm

    @property
    def busy(self) -> bool:
        """An RACP procedure is running."""
        return self._response is not None

    def own_subscriptions(self) -> list[Subscription]:
        return [Subscription(GLUCOSE_MEASUREMENT), Subscription(GLUCOSE_CONTEXT, required=False), Subscription(RACP)]

    async def on_connected(self, session: BleSession) -> None:
        await super().on_connected(session)
        self._context_subscribed = GLUCOSE_CONTEXT in session.subscribed
        await self.backfill(session)

    async def backfill(self, session: BleSession) -> None:
        self._wm = self.watermarks.get(self.device_id)
        wm = self._wm
        if wm is None:
            await self._procedure(session, gc.racp_report_all(), "all")
            return
        request = gc.racp_report_from_seq(wm + 1) if wm < 0xFFFF else gc.racp_report_all()
        resp = await self._procedure(session, request, "after")
        if resp is not None and resp.code in _RACP_CANNOT_FILTER and request != gc.racp_report_all():
            log.info(
                "%s: meter cannot report by sequence number (%s); asking for all records",
                self.device_id,
                resp.code_name,
            )
            resp = await self._procedure(session, gc.racp_report_all(), "after")
        if resp is None or self._delivered:
            return
        # Nothing newer than the watermark: did the numbering go backwards?
        await self._procedure(session, gc.racp_report_last(), "check_last")
        if self._backwards:
            await self._resync(session)

    async def _resync(self, session: BleSession) -> None:
        log.warning(
            "%s: glucose record numbering went backwards (watermark %s); fetching all records again",
            self.device_id,
            self._wm,
        )
        self.resyncs += 1
        await self._procedure(session, gc.racp_report_all(), "resync")

    async def _procedure(self, session: BleSession, request: bytes, mode: str) -> gc.RacpResponse | None:
        """Write one RACP request and wait for its response; None if the meter went quiet."""
        fut: asyncio.Future[gc.RacpResponse] = asyncio.get_running_loop().create_future()
        self._response, self._mode, self._delivered, self._backwards = fut, mode, 0, False
        self._last_traffic = time.monotonic()
        self.procedures.append(request)
        try:
            await session.write(RACP, request, response=True)
            while True:
                left = RACP_IDLE_TIMEOUT_S - (time.monotonic() - self._last_traffic)
                if left <= 0:
                    log.warning(
                        "%s: RACP %s: meter silent for %.0f s; giving up until the next connect",
                        self.device_id,
                        request.hex(" "),
                        RACP_IDLE_TIMEOUT_S,
                    )
                    try:
                        await session.write(RACP, gc.racp_abort(), response=True)
                    except BleakError:
                        pass
                    return None
                try:
                    resp = await asyncio.wait_for(asyncio.shield(fut), left)
                    break
                except TimeoutError:
                    continue
        finally:
            self._response = None
            self._mode = "live"
        if not resp.ok:
            log.warning("%s: RACP %s answered %s", self.device_id, request.hex(" "), resp.code_name or resp.code)
        return resp

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        self._last_traffic = time.monotonic()
        if uuid == GLUCOSE_MEASUREMENT:
            await self._on_measurement(session, data, received_at)
        elif uuid == GLUCOSE_CONTEXT:
            await self._on_context(session, data, received_at)
        elif uuid == RACP:
            await self._flush_pending(session)
            try:
                resp = gc.decode_racp_response(data)
            except gc.GattDecodeError as exc:
                self.malformed(session, exc)
                return
            if self._response is not None and not self._response.done():
                self._response.set_result(resp)
            else:
                log.debug("%s: unsolicited RACP response %s", self.device_id, data.hex(" "))

    async def _on_measurement(self, session: BleSession, data: bytes, received_at: datetime) -> None:
        await self._flush_pending(session)
        try:
            m = gc.decode_glucose_measurement(data)
        except gc.GattDecodeError:
            await self.emit_gatt(session, GLUCOSE_MEASUREMENT, data, received_at)  # rejected with the reason
            return
        if not self._wanted(session, m.seq):
            return
        result = decode_gatt("2a18", data, self.device_id, received_at)
        if m.context_follows and self._context_subscribed:
            self._pending = _PendingRecord(m.seq, result, received_at)
        else:
            await self._deliver(session, m.seq, result, received_at)

    def _wanted(self, session: BleSession, seq: int) -> bool:
        wm = self._wm
        if self._mode in ("all", "resync") or wm is None or seq > wm:
            return True
        if seq < wm and self._mode in ("check_last", "live"):
            self._backwards = True
            if self._mode == "live":
                session.spawn(self._resync(session))
        return False  # delivered before (a resend, or the answer to "last")

    async def _on_context(self, session: BleSession, data: bytes, received_at: datetime) -> None:
        try:
            ctx = gc.decode_glucose_context(data)
        except gc.GattDecodeError as exc:
            self.malformed(session, exc)
            return
        pending = self._pending
        if pending is None or pending.seq != ctx.seq:
            return  # context of a record we skipped (already delivered)
        self._pending = None
        result = pending.result
        if not isinstance(result, Rejected) and ctx.meal is not None:
            result = result.model_copy(update={"meal": ctx.meal})
        await self._deliver(session, pending.seq, result, pending.received_at)

    async def _flush_pending(self, session: BleSession) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._deliver(session, pending.seq, pending.result, pending.received_at)

    async def _deliver(
        self, session: BleSession, seq: int, result: AnyReading | Rejected, received_at: datetime
    ) -> None:
        self._delivered += 1
        if self._mode == "resync" or self._wm is None or seq > self._wm:
            self._wm = seq  # in memory at once: it filters the records that follow
        entry: list[int | bool] = [seq, False]
        self._in_flight.append(entry)

        def stored() -> None:
            entry[1] = True
            done = None
            while self._in_flight and self._in_flight[0][1]:
                done = self._in_flight.pop(0)[0]
            if done is not None:
                self.watermarks.set(self.device_id, int(done))

        # A rejected record (control solution) is done as well: it is never asked for again.
        await self.emit(session, result, received_at, on_stored=stored)

    async def on_link_lost(self, session: BleSession) -> None:
        await self._flush_pending(session)


# ---------------------------------------------------------------- heart rate


class HeartRateProfile(Profile):
    """0x2A37: bpm, sensor contact and RR intervals, one reading per notification."""

    name = "heart_rate"

    def own_subscriptions(self) -> list[Subscription]:
        return [Subscription(HR_MEASUREMENT)]

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        if uuid == HR_MEASUREMENT:
            await self.emit_gatt(session, uuid, data, received_at)


# ---------------------------------------------------------------- ECG


class VendorEcgProfile(Profile):
    """Our patches (docs/vendor_ecg.md): frames joined into 1 s ``ecg`` readings, gaps found by seq."""

    name = "vendor_ecg"

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.assembler = EcgAssembler()
        self.gaps = 0
        self._last_seq: int | None = None

    def own_subscriptions(self) -> list[Subscription]:
        return [Subscription(gc.VENDOR_ECG_DATA_UUID)]

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        if uuid != gc.VENDOR_ECG_DATA_UUID:
            return
        try:
            frame = gc.decode_vendor_ecg_frame(data)
        except gc.GattDecodeError as exc:
            self.malformed(session, exc)
            return
        gap = self._last_seq is not None and frame.seq != (self._last_seq + 1) & 0xFFFF
        if gap:
            self.gaps += 1
            log.info("%s: ECG frames lost on the air (seq %d -> %d)", self.device_id, self._last_seq, frame.seq)
        self._last_seq = frame.seq
        for f in self.assembler.push(frame.samples_uv(), frame.fs, frame.lead_off, received_at, gap=gap):
            await session.outlet.reading(f, received_at)

    async def on_link_lost(self, session: BleSession) -> None:
        self._last_seq = None
        for f in self.assembler.restart():
            await session.outlet.reading(f, session.clock())


class PolarH10EcgProfile(Profile):
    """Polar H10: PMD start ECG (130 Hz) on each connect, stream, stop on shutdown; 0x2A37 for contact.

    The H10 has no lead-off bit, so frames count as lead-off while 0x2A37
    reports no skin contact (docs/spec/gatt.md §Polar H10 PMD). Its clock resets when it shuts
    down, so only differences between its timestamps are used (gap detection).
    """

    name = "polar_h10_ecg"

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id)
        self.assembler = EcgAssembler()
        self.gaps = 0
        self._no_contact = False
        self._last_ns: int | None = None
        self._waiting: tuple[int, asyncio.Future[gc.PolarPmdResponse]] | None = None

    def own_subscriptions(self) -> list[Subscription]:
        return [
            Subscription(gc.POLAR_PMD_CONTROL_UUID),
            Subscription(gc.POLAR_PMD_DATA_UUID),
            Subscription(HR_MEASUREMENT, required=False),
        ]

    async def on_connected(self, session: BleSession) -> None:
        await super().on_connected(session)
        resp = await self._command(session, gc.POLAR_PMD_START_ECG)
        if not resp.ok and resp.status != 6:  # 6: already streaming (we reconnected mid-stream)
            raise BleakError(f"Polar PMD refused to start ECG (status {resp.status})")

    async def _command(self, session: BleSession, command: bytes) -> gc.PolarPmdResponse:
        fut: asyncio.Future[gc.PolarPmdResponse] = asyncio.get_running_loop().create_future()
        self._waiting = (command[0], fut)
        try:
            await session.write(gc.POLAR_PMD_CONTROL_UUID, command, response=True)
            return await asyncio.wait_for(fut, PMD_RESPONSE_TIMEOUT_S)
        finally:
            self._waiting = None

    async def before_disconnect(self, session: BleSession) -> None:
        try:
            await self._command(session, gc.POLAR_PMD_STOP_ECG)
        except (BleakError, TimeoutError) as exc:
            log.debug("%s: PMD stop: %s", self.device_id, exc)

    async def on_profile_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None:
        if uuid == gc.POLAR_PMD_CONTROL_UUID:
            try:
                resp = gc.decode_polar_pmd_response(data)
            except gc.GattDecodeError as exc:
                self.malformed(session, exc)
                return
            if self._waiting is not None and self._waiting[0] == resp.op and not self._waiting[1].done():
                self._waiting[1].set_result(resp)
        elif uuid == gc.POLAR_PMD_DATA_UUID:
            try:
                frame = gc.decode_polar_pmd_ecg(data)
            except gc.GattDecodeError as exc:
                self.malformed(session, exc)
                return
            period_ns = 1e9 / frame.fs
            first_ns = frame.last_sample_ns_since_2000 - (len(frame.samples_uv) - 1) * period_ns
            gap = self._last_ns is not None and abs(first_ns - (self._last_ns + period_ns)) > max(
                3 * period_ns, POLAR_GAP_TOLERANCE_S * 1e9
            )
            if gap:
                self.gaps += 1
            self._last_ns = frame.last_sample_ns_since_2000
            samples = np.asarray(frame.samples_uv, dtype=np.float64)
            for f in self.assembler.push(samples, frame.fs, self._no_contact, received_at, gap=gap):
                await session.outlet.reading(f, received_at)
        elif uuid == HR_MEASUREMENT:
            result = decode_gatt("2a37", data, self.device_id, received_at)
            if isinstance(result, HeartRateReading):
                self._no_contact = result.contact is False
            await self.emit(session, result, received_at)

    async def on_link_lost(self, session: BleSession) -> None:
        self._last_ns = None
        for f in self.assembler.restart():
            await session.outlet.reading(f, session.clock())


PROFILES: dict[str, type[Profile]] = {
    p.name: p for p in (BloodPressureProfile, GlucoseProfile, HeartRateProfile, VendorEcgProfile, PolarH10EcgProfile)
}


def make_profile(name: str, device_id: str, watermarks: RacpWatermarks) -> Profile:
    if name == GlucoseProfile.name:
        return GlucoseProfile(device_id, watermarks)
    return PROFILES[name](device_id)
