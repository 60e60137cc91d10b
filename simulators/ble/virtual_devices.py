"""Virtual BLE devices for the mock BlueZ: BP cuffs, glucose meters, HR straps, ECG patches.

Each one speaks the standard GATT profile (or our vendor ECG format,
docs/vendor_ecg.md) byte for byte, using the same encoders the MQTT-side
simulators use, and behaves like the device class it stands for:

* :class:`BloodPressureCuff` keeps a measurement until its 0x2A35
  indication has been delivered (BlueZ confirms indications at once), then
  optionally disconnects and stops advertising until the next measurement.
* :class:`GlucoseMeter` stores records with sequence numbers and answers the
  Record Access Control Point (report all / >= seq / last / count / abort /
  delete), notifying 0x2A18 (+ 0x2A34 context) and ending with an indication.
* :class:`HeartRateStrap` notifies 0x2A37 with RR intervals while subscribed.
* :class:`VendorEcgPatch` streams v1 vendor ECG frames while subscribed.
* :class:`PolarH10` answers PMD start/stop and streams PMD ECG frames.

All of them carry Battery (0x180F/0x2A19, read + notify) and Current Time
(0x1805/0x2A2B, read + notify, writable unless ``time_writable=False``)
with a settable clock offset, so clock-skew handling can be exercised.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway import gatt_codecs as gc
from gateway.gatt_codecs import uuid16
from simulators.ble.peripheral import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_PROCEDURE_IN_PROGRESS,
    AttError,
    Characteristic,
    Peripheral,
)
from simulators.ecg_synthesis import EcgSynth
from simulators.gatt_encoding import encode_bp_measurement, encode_glucose_measurement, encode_heart_rate
from stream.models import CHINA_TZ

BATTERY_SERVICE = uuid16(0x180F)
BATTERY_LEVEL = uuid16(0x2A19)
CURRENT_TIME_SERVICE = uuid16(0x1805)
CURRENT_TIME = uuid16(0x2A2B)
BP_SERVICE = uuid16(0x1810)
BP_MEASUREMENT = uuid16(0x2A35)
INTERMEDIATE_CUFF_PRESSURE = uuid16(0x2A36)
BP_FEATURE = uuid16(0x2A49)
GLUCOSE_SERVICE = uuid16(0x1808)
GLUCOSE_MEASUREMENT = uuid16(0x2A18)
GLUCOSE_CONTEXT = uuid16(0x2A34)
GLUCOSE_FEATURE = uuid16(0x2A51)
RACP = uuid16(0x2A52)
HR_SERVICE = uuid16(0x180D)
HR_MEASUREMENT = uuid16(0x2A37)
BODY_SENSOR_LOCATION = uuid16(0x2A38)

_MEAL_CODES = {"preprandial": 1, "postprandial": 2, "fasting": 3, "casual": 4, "bedtime": 5}
RECORD_INTERVAL_S = 0.005  # gap between back-filled record notifications


class StandardDevice(Peripheral):
    """A peripheral with Battery and Current Time services and a device clock."""

    def __init__(
        self,
        address: str,
        name: str,
        *,
        advertised_uuids: tuple[str, ...] = (),
        battery: int | None = 90,
        clock_offset: timedelta = timedelta(0),
        time_writable: bool = True,
        rssi: int = -60,
    ) -> None:
        super().__init__(address, name, advertised_uuids=advertised_uuids, rssi=rssi)
        self.clock_offset = clock_offset
        self._battery = battery
        self._time_writable = time_writable

    def _add_common_services(self) -> None:
        """Called by subclasses after their own services, so handles look like a real device's."""
        if self._battery is not None:
            self.add_service(BATTERY_SERVICE, Characteristic(BATTERY_LEVEL, ("read", "notify"), bytes([self._battery])))
        flags = ("read", "write", "notify") if self._time_writable else ("read", "notify")
        self.add_service(CURRENT_TIME_SERVICE, Characteristic(CURRENT_TIME, flags))

    def device_now(self) -> datetime:
        """The device's wall clock (no zone on the wire; it believes it runs on China time)."""
        return (datetime.now(CHINA_TZ) + self.clock_offset).replace(tzinfo=None)

    def set_battery(self, percent: int) -> None:
        self._battery = percent
        ch = self.char(BATTERY_LEVEL)
        ch.value = bytes([percent])
        self.notify(BATTERY_LEVEL, ch.value)

    def on_read(self, ch: Characteristic) -> bytes:
        if ch.uuid == CURRENT_TIME:
            return gc.encode_current_time(self.device_now(), adjust_reason=0)
        return ch.value

    async def on_write(self, ch: Characteristic, data: bytes) -> None:
        if ch.uuid == CURRENT_TIME:
            written = gc.decode_current_time(data).date_time.to_datetime(None)
            if written is not None:
                self.clock_offset = written - datetime.now(CHINA_TZ).replace(tzinfo=None, microsecond=0)
            return
        ch.value = data

    def push_raw(self, uuid: str, value: bytes) -> bool:
        """Send arbitrary bytes on a characteristic (malformed-value tests)."""
        return self.notify(uuid, value)


# ---------------------------------------------------------------- blood pressure


class BloodPressureCuff(StandardDevice):
    """An upper-arm cuff: measures, advertises, indicates 0x2A35 until delivered."""

    def __init__(
        self,
        address: str,
        name: str = "BP-Cuff",
        *,
        intermediate: bool = True,
        disconnect_after_s: float | None = None,
        **kw: object,
    ) -> None:
        super().__init__(address, name, advertised_uuids=(BP_SERVICE,), **kw)  # type: ignore[arg-type]
        chars = [Characteristic(BP_MEASUREMENT, ("indicate",))]
        if intermediate:
            chars.append(Characteristic(INTERMEDIATE_CUFF_PRESSURE, ("notify",)))
        chars.append(Characteristic(BP_FEATURE, ("read",), b"\x07\x00"))
        self.add_service(BP_SERVICE, *chars)
        self._add_common_services()
        self.disconnect_after_s = disconnect_after_s
        self.pending: list[bytes] = []  # measurements not yet indicated
        self.delivered: list[bytes] = []  # indicated and confirmed

    def measure(
        self,
        systolic: float,
        diastolic: float,
        pulse: float = 72,
        *,
        when: datetime | None = None,
        body_movement: bool = False,
        cuff_loose: bool = False,
        irregular_pulse: bool = False,
        user_id: int | None = 1,
    ) -> bytes:
        value = encode_bp_measurement(
            systolic,
            diastolic,
            pulse=pulse,
            when=when or self.device_now(),
            body_movement=body_movement,
            cuff_loose=cuff_loose,
            irregular_pulse=irregular_pulse,
            user_id=user_id,
        )
        if self.connected and self.has_char(INTERMEDIATE_CUFF_PRESSURE):
            for cuff in (160, 120, 80):  # inflation/deflation progress, mmHg
                self.notify(INTERMEDIATE_CUFF_PRESSURE, bytes([0x00]) + struct.pack("<HHH", cuff, 0x07FF, 0x07FF))
        self.pending.append(value)
        self.advertising = True
        self._flush()
        return value

    def _flush(self) -> None:
        while self.pending and self.notify(BP_MEASUREMENT, self.pending[0]):
            self.delivered.append(self.pending.pop(0))
        if not self.pending and self.connected and self.delivered and self.disconnect_after_s is not None:
            self.spawn(self._power_off_after(self.disconnect_after_s))

    async def _power_off_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.pending:
            self.advertising = False  # until the next measurement
            self.disconnect_self()

    def on_subscribe(self, ch: Characteristic) -> None:
        if ch.uuid == BP_MEASUREMENT:
            self._flush()


# ---------------------------------------------------------------- glucose


@dataclass
class StoredGlucose:
    seq: int
    when: datetime  # device wall clock, zone-less
    mmol_l: float | None
    meal: str | None = None
    control: bool = False
    hi: bool = False
    lo: bool = False
    battery_low: bool = False

    def measurement(self) -> bytes:
        value = encode_glucose_measurement(
            self.seq,
            self.when,
            self.mmol_l,
            hi=self.hi,
            lo=self.lo,
            control_solution=self.control,
            battery_low=self.battery_low,
        )
        if self.meal is not None:
            value = bytes([value[0] | 0x10]) + value[1:]  # b4: a context record follows
        return value

    def context(self) -> bytes | None:
        if self.meal is None:
            return None
        return bytes([0x02]) + struct.pack("<H", self.seq) + bytes([_MEAL_CODES[self.meal]])


class GlucoseMeter(StandardDevice):
    """A meter holding records; the gateway back-fills them through RACP."""

    def __init__(
        self,
        address: str,
        name: str = "Glucose-Meter",
        *,
        disconnect_after_s: float | None = None,
        first_seq: int = 1,
        **kw: object,
    ) -> None:
        super().__init__(address, name, advertised_uuids=(GLUCOSE_SERVICE,), **kw)  # type: ignore[arg-type]
        self.add_service(
            GLUCOSE_SERVICE,
            Characteristic(GLUCOSE_MEASUREMENT, ("notify",)),
            Characteristic(GLUCOSE_CONTEXT, ("notify",)),
            Characteristic(GLUCOSE_FEATURE, ("read",), b"\x00\x00"),
            Characteristic(RACP, ("write", "indicate")),
        )
        self._add_common_services()
        self.records: list[StoredGlucose] = []
        self.next_seq = first_seq
        self.disconnect_after_s = disconnect_after_s
        self.racp_requests: list[bytes] = []
        self.deleted: list[int] = []  # seqs a central asked us to delete (the gateway never should)
        self._procedure: asyncio.Task[None] | None = None

    def add_record(
        self,
        mmol_l: float | None,
        *,
        when: datetime | None = None,
        meal: str | None = None,
        control: bool = False,
        hi: bool = False,
        lo: bool = False,
        battery_low: bool = False,
    ) -> StoredGlucose:
        rec = StoredGlucose(
            self.next_seq, when or self.device_now().replace(microsecond=0), mmol_l, meal, control, hi, lo, battery_low
        )
        self.next_seq = (self.next_seq + 1) & 0xFFFF
        self.records.append(rec)
        self.advertising = True
        if self.connected and self._procedure is None:
            self._send_record(rec)  # measured while connected: sent live
        return rec

    def reset_sequence(self, start: int = 1, *, keep_records: bool = False) -> None:
        """Battery change / factory reset: numbering restarts (seq goes backwards)."""
        if not keep_records:
            self.records.clear()
        self.next_seq = start

    def _send_record(self, rec: StoredGlucose) -> None:
        self.notify(GLUCOSE_MEASUREMENT, rec.measurement())
        ctx = rec.context()
        if ctx is not None:
            self.notify(GLUCOSE_CONTEXT, ctx)

    def _respond(self, request_op: int, code: int) -> None:
        self.notify(RACP, bytes([gc.RACP_OP_RESPONSE_CODE, 0x00, request_op, code]))

    async def on_write(self, ch: Characteristic, data: bytes) -> None:
        if ch.uuid != RACP:
            await super().on_write(ch, data)
            return
        if not ch.notifying:
            raise AttError(ATT_CCCD_IMPROPERLY_CONFIGURED)
        self.racp_requests.append(bytes(data))
        op = data[0] if data else 0
        if op == gc.RACP_OP_ABORT:
            if self._procedure is not None:
                self._procedure.cancel()
                self._procedure = None
            self.spawn(self._later(lambda: self._respond(op, 1)))
            return
        if self._procedure is not None:
            raise AttError(ATT_PROCEDURE_IN_PROGRESS)
        self._procedure = self.spawn(self._run_procedure(bytes(data)))

    async def _later(self, fn) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)  # the write response goes out before the indication
        fn()

    def _select(self, operator: int, operand: bytes) -> list[StoredGlucose] | int:
        """Records for an RACP operator, or a response code for a bad request."""
        recs = sorted(self.records, key=lambda r: r.seq)
        if operator == gc.RACP_OPERATOR_ALL:
            return recs
        if operator == gc.RACP_OPERATOR_LAST:
            return recs[-1:]
        if operator == 5:  # first
            return recs[:1]
        if operator in (2, 3, 4):
            if not operand or operand[0] != gc.RACP_FILTER_SEQ:
                return 9  # operand not supported (only sequence-number filters)
            vals = operand[1:]
            if len(vals) != (4 if operator == 4 else 2):
                return 5  # invalid operand
            a = int.from_bytes(vals[:2], "little")
            if operator == 2:
                return [r for r in recs if r.seq <= a]
            if operator == 3:
                return [r for r in recs if r.seq >= a]
            b = int.from_bytes(vals[2:], "little")
            return [r for r in recs if a <= r.seq <= b]
        return 3  # invalid operator

    async def _run_procedure(self, data: bytes) -> None:
        try:
            await asyncio.sleep(0)
            op = data[0]
            operator = data[1] if len(data) > 1 else 0
            selected = self._select(operator, data[2:]) if op in (1, 2, 4) else 2
            if isinstance(selected, int):
                self._respond(op, selected if op in (1, 2, 4) else 2)
                return
            if op == gc.RACP_OP_REPORT_COUNT:
                self.notify(RACP, bytes([gc.RACP_OP_COUNT_RESPONSE, 0x00]) + struct.pack("<H", len(selected)))
                return
            if op == gc.RACP_OP_DELETE:
                self.deleted.extend(r.seq for r in selected)
                self.records = [r for r in self.records if r not in selected]
                self._respond(op, 1)
                return
            if not selected:
                self._respond(op, gc.RACP_NO_RECORDS)
                return
            for rec in selected:
                self._send_record(rec)
                await asyncio.sleep(RECORD_INTERVAL_S)
            self._respond(op, gc.RACP_SUCCESS)
        finally:
            self._procedure = None
        if self.disconnect_after_s is not None:
            await asyncio.sleep(self.disconnect_after_s)
            self.advertising = False  # powers off; wakes up when a new record is taken
            self.disconnect_self()

    def on_disconnect(self) -> None:
        self._procedure = None


# ---------------------------------------------------------------- heart rate


class HeartRateStrap(StandardDevice):
    """A chest strap notifying 0x2A37 (bpm, contact, RR) every ``period_s`` while subscribed."""

    def __init__(
        self, address: str, name: str = "HR-Strap", *, bpm: int = 72, period_s: float = 1.0, **kw: object
    ) -> None:
        super().__init__(address, name, advertised_uuids=(HR_SERVICE,), **kw)  # type: ignore[arg-type]
        self.add_service(
            HR_SERVICE,
            Characteristic(HR_MEASUREMENT, ("notify",)),
            Characteristic(BODY_SENSOR_LOCATION, ("read",), b"\x01"),
        )
        self._add_common_services()
        self.bpm = bpm
        self.contact: bool | None = True
        self.period_s = period_s
        self.sent = 0

    def on_subscribe(self, ch: Characteristic) -> None:
        if ch.uuid == HR_MEASUREMENT:
            self.spawn(self._stream())

    async def _stream(self) -> None:
        while True:
            rr = 60000.0 / self.bpm
            if self.notify(HR_MEASUREMENT, encode_heart_rate(self.bpm, [rr], contact=self.contact)):
                self.sent += 1
            await asyncio.sleep(self.period_s)


# ---------------------------------------------------------------- ECG


class VendorEcgPatch(StandardDevice):
    """Our own single-lead patch: v1 vendor frames (docs/vendor_ecg.md) while subscribed."""

    def __init__(
        self,
        address: str,
        name: str = "VG-ECG",
        *,
        fs: int = 250,
        frame_samples: int = 25,
        uv_per_lsb: float = 1.25,
        hr_bpm: float = 72.0,
        seed: int = 0,
        **kw: object,
    ) -> None:
        super().__init__(address, name, advertised_uuids=(gc.VENDOR_ECG_SERVICE_UUID,), **kw)  # type: ignore[arg-type]
        self.add_service(gc.VENDOR_ECG_SERVICE_UUID, Characteristic(gc.VENDOR_ECG_DATA_UUID, ("notify",)))
        self._add_common_services()
        self.fs, self.frame_samples, self.uv_per_lsb = fs, frame_samples, uv_per_lsb
        self.synth = EcgSynth(fs=fs, seed=seed, hr_bpm=hr_bpm)
        self.lead_off = False
        self.seq = 0
        self.frames_sent = 0
        self._buffer = np.zeros(0)

    def skip_frames(self, n: int) -> None:
        """Lose ``n`` frames on the air (the gateway must see a sequence gap)."""
        self.seq = (self.seq + n) & 0xFFFF
        self._next_samples(n * self.frame_samples)

    def _next_samples(self, n: int) -> np.ndarray:
        while self._buffer.size < n:
            self._buffer = np.concatenate([self._buffer, self.synth.frame(1.0)])
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def next_frame(self) -> bytes:
        counts = np.clip(np.round(self._next_samples(self.frame_samples) / self.uv_per_lsb), -32767, 32766)
        frame = gc.encode_vendor_ecg_frame(self.seq, self.fs, self.uv_per_lsb, self.lead_off, counts.astype(np.int16))
        self.seq = (self.seq + 1) & 0xFFFF
        return frame

    def on_subscribe(self, ch: Characteristic) -> None:
        if ch.uuid == gc.VENDOR_ECG_DATA_UUID:
            self.spawn(self._stream())

    async def _stream(self) -> None:
        period = self.frame_samples / self.fs
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if self.notify(gc.VENDOR_ECG_DATA_UUID, self.next_frame()):
                self.frames_sent += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))


class PolarH10(StandardDevice):
    """A Polar H10: PMD ECG at 130 Hz after a start command, plus 0x2A37 with contact bits."""

    SAMPLES_PER_FRAME = 73

    def __init__(
        self, address: str, name: str = "Polar H10 ABCD1234", *, hr_bpm: float = 70.0, seed: int = 0, **kw: object
    ) -> None:
        super().__init__(address, name, advertised_uuids=(HR_SERVICE, gc.POLAR_PMD_SERVICE_UUID), **kw)  # type: ignore[arg-type]
        self.add_service(HR_SERVICE, Characteristic(HR_MEASUREMENT, ("notify",)))
        self.add_service(
            gc.POLAR_PMD_SERVICE_UUID,
            Characteristic(gc.POLAR_PMD_CONTROL_UUID, ("read", "write", "indicate"), b"\x0f\x05\x00"),
            Characteristic(gc.POLAR_PMD_DATA_UUID, ("notify",)),
        )
        self._add_common_services()
        self.synth = EcgSynth(fs=130, seed=seed, hr_bpm=hr_bpm)
        self.bpm = int(hr_bpm)
        self.contact: bool | None = True
        self.streaming = False
        self.commands: list[bytes] = []
        self.frames_sent = 0
        self._stream_task: asyncio.Task[None] | None = None
        self._sensor_epoch = datetime(2000, 1, 1)

    async def on_write(self, ch: Characteristic, data: bytes) -> None:
        if ch.uuid != gc.POLAR_PMD_CONTROL_UUID:
            await super().on_write(ch, data)
            return
        self.commands.append(bytes(data))
        op = data[0] if data else 0
        mtype = data[1] if len(data) > 1 else 0
        if op == 0x02 and mtype == 0x00:
            status = 0x06 if self.streaming else 0x00  # 6 = already in that state
            if not self.streaming:
                self.streaming = True
                self._stream_task = self.spawn(self._stream())
        elif op == 0x03:
            status = 0x00
            self.streaming = False
            if self._stream_task is not None:
                self._stream_task.cancel()
        elif op == 0x01:
            status = 0x00
        else:
            status = 0x01  # invalid op code
        self.spawn(self._answer(bytes([0xF0, op, mtype, status])))

    async def _answer(self, response: bytes) -> None:
        await asyncio.sleep(0)
        self.notify(gc.POLAR_PMD_CONTROL_UUID, response)

    def on_subscribe(self, ch: Characteristic) -> None:
        if ch.uuid == HR_MEASUREMENT:
            self.spawn(self._heart_rate())

    def on_disconnect(self) -> None:
        self.streaming = False  # the H10 stops measuring when the link drops

    async def _heart_rate(self) -> None:
        while True:
            self.notify(HR_MEASUREMENT, encode_heart_rate(self.bpm, [60000.0 / self.bpm], contact=self.contact))
            await asyncio.sleep(1.0)

    async def _stream(self) -> None:
        period = self.SAMPLES_PER_FRAME / 130.0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        buf = np.zeros(0)
        # The sensor clock counts samples: timestamps are exact, whatever the radio timing.
        start_ns = int((self.device_now() - self._sensor_epoch).total_seconds() * 1e9)
        sent = 0
        while True:
            while buf.size < self.SAMPLES_PER_FRAME:
                buf = np.concatenate([buf, self.synth.frame(1.0)])
            samples, buf = buf[: self.SAMPLES_PER_FRAME], buf[self.SAMPLES_PER_FRAME :]
            sent += self.SAMPLES_PER_FRAME
            last_ns = start_ns + round((sent - 1) * 1e9 / 130.0)
            body = b"".join(int(s).to_bytes(3, "little", signed=True) for s in samples.astype(int))
            if self.notify(gc.POLAR_PMD_DATA_UUID, bytes([0x00]) + last_ns.to_bytes(8, "little") + b"\x00" + body):
                self.frames_sent += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
