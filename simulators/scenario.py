"""Scenario files: a timeline of device events, played against a broker.

```yaml
name: confirmed hypertensive crisis
time_scale: 30            # scenario seconds per wall-clock second (1 = real time)
devices:
  bp-0001: {kind: blood_pressure}          # add `gatt: true` to send raw 0x2A35 bytes
  ecg-0001: {kind: ecg, fs: 250}          # `gatt: true`: vendor frames (no time on the wire: play at time_scale 1)
  hh-0001: {kind: ecg_handheld}            # a handheld ECG: AF-screening strips, one message each
timeline:
  - {at: 0s, device: bp-0001, blood_pressure: {systolic: 186, diastolic: 118}}
  - {at: 2m, device: bp-0001, blood_pressure: {systolic: 188, diastolic: 116}}
  - {at: 0s, device: ecg-0001, ecg: {rhythm: af, hr: 120, duration: 90s}}
  - {at: 3m, device: bp-0001, raw: "this is not json"}
  - {at: 4m, device: hh-0001, strip: {rhythm: af, hr: 110, seconds: 30}}
expect:
  - {condition: bp_crisis, tier: township}
```

Device times are laid out so the last event is stamped about "now": the
gateway sees a plausible, recent history however fast the scenario plays.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiomqtt
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulators.devices import BpCuff, EcgHandheld, EcgPatch, GlucoseMeter, Message, Spo2Clip, gatt_topic, reading_topic
from simulators.mqtt_consume import consume_until
from stream.models import Condition, Duration, Tier, now_local, parse_duration

if TYPE_CHECKING:
    from simulators.stack import Stack

log = logging.getLogger("vitalgate.simulate")


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfflineWindow(_S):
    """The device is out of range: what it measures is stored and sent when it is back (back-fill)."""

    start: Duration
    end: Duration
    stores: bool = Field(True, description="False: readings in the window are lost (a device without memory)")


class BatteryDrain(_S):
    start: int = Field(100, ge=0, le=100)
    per_hour: float = Field(1.0, ge=0)
    every: Duration = parse_duration("1h")


class DeviceSpec(_S):
    kind: Literal["blood_pressure", "glucose", "ecg", "spo2", "ecg_handheld"]
    gatt: bool = False
    fs: int = 250
    # Device behaviours (issue 7): how real devices misbehave.
    clock_skew: Duration | None = Field(None, description="device clock ahead of true time")
    clock_behind: bool = Field(False, description="clock_skew is behind instead of ahead")
    duplicate_rate: float = Field(0.0, ge=0, le=1, description="share of messages sent twice (QoS 1 redelivery)")
    reorder_rate: float = Field(0.0, ge=0, le=1, description="share of messages delivered after the next one")
    drop_rate: float = Field(0.0, ge=0, le=1, description="flaky link: share of messages never sent")
    offline: list[OfflineWindow] = Field(default_factory=list)
    battery: BatteryDrain | None = None
    gateway: dict[str, Any] = Field(
        default_factory=dict,
        description="what the gateway's config should say about "
        "this device (expected_interval, schedule); used by the test harness",
    )


class BpEvent(_S):
    systolic: float
    diastolic: float
    pulse: float = 75
    body_movement: bool = False
    cuff_loose: bool = False


class GlucoseEvent(_S):
    mmol_l: float | None = None
    meal: str | None = None
    hi: bool = False
    lo: bool = False


class Spo2Event(_S):
    spo2: float
    pulse: float = 75


class EcgEvent(_S):
    """A stretch of synthetic ECG (1-s frames): rhythm, rate, ectopy, artefacts, lead-off."""

    rhythm: Literal["sinus", "af", "vt", "asystole", "brady", "tachy", "pause"] = "sinus"
    hr: float = Field(72, gt=10, lt=300)
    duration: Duration = parse_duration("60s")
    lead_off: bool = False
    pvc_fraction: float = Field(0.0, ge=0, le=0.5)
    pause_s: float = Field(4.0, gt=0, le=20)
    artefact: Literal["motion", "electrode_pop", "saturation", "baseline_wander", "flat"] | None = None


class StripEvent(_S):
    """A screening strip from a handheld (or a patch): one `ecg_strip` message of synthetic ECG."""

    rhythm: Literal["sinus", "af", "brady", "tachy"] = "sinus"
    hr: float = Field(72, gt=20, lt=250)
    seconds: float = Field(30.0, ge=9, le=60)
    artefact: Literal["motion", "electrode_pop", "saturation", "baseline_wander", "flat"] | None = None


class ReplayEvent(_S):
    """A real WFDB record streamed as this patch's frames (path relative to the scenario file)."""

    record: str
    start: Duration = parse_duration("0s")
    duration: Duration | None = None


class TimelineEvent(_S):
    at: Duration
    device: str
    blood_pressure: BpEvent | None = None
    glucose: GlucoseEvent | None = None
    spo2: Spo2Event | None = None
    ecg: EcgEvent | None = None
    replay: ReplayEvent | None = None
    strip: StripEvent | None = None
    battery: int | None = Field(None, ge=0, le=100, description="a 0x2A19 battery level notification")
    raw: str | None = Field(None, description="published as-is on the device's reading topic (bad-input tests)")

    @model_validator(mode="after")
    def _one(self) -> TimelineEvent:
        n = sum(
            x is not None
            for x in (
                self.blood_pressure,
                self.glucose,
                self.spo2,
                self.ecg,
                self.replay,
                self.strip,
                self.battery,
                self.raw,
            )
        )
        if n != 1:
            raise ValueError(
                "each event needs exactly one of blood_pressure, glucose, spo2, ecg, replay, strip, battery, raw"
            )
        return self


class ModelRun(_S):
    """Readings generated from a patient model every `every` between `start` and `end`."""

    device: str
    model: Literal["blood_pressure", "glucose"]
    every: Duration
    start: Duration = parse_duration("0s")
    end: Duration
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict, description="BpModel / GlucoseModel fields")


class InfraEvent(_S):
    """Something that happens to the infrastructure, not to a patient (needs `--stack`).

    - `uplink: down` stops the county broker for `for` (the uplink is down; the gateway must hold
      everything and send it, alerts first, when the county is back);
    - `broker: restart` stops the clinic broker and starts it again after `for` (default: at once);
    - `gateway: kill` SIGKILLs `vitalgate run` (a power cut) and starts it again after `for`;
      `gateway: restart` does the same with SIGTERM (an orderly restart).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: Duration
    uplink: Literal["down"] | None = None
    broker: Literal["restart"] | None = None
    gateway: Literal["kill", "restart"] | None = None
    for_: Duration = Field(parse_duration("0s"), alias="for")

    @model_validator(mode="after")
    def _one(self) -> InfraEvent:
        n = sum(x is not None for x in (self.uplink, self.broker, self.gateway))
        if n != 1:
            raise ValueError("each infrastructure event needs exactly one of uplink, broker, gateway")
        if self.uplink and self.for_.total_seconds() <= 0:
            raise ValueError("`uplink: down` needs `for:` (how long the uplink stays down, e.g. 5m)")
        return self

    def describe(self) -> str:
        what = (
            f"uplink {self.uplink}"
            if self.uplink
            else f"broker {self.broker}"
            if self.broker
            else f"gateway {self.gateway}"
        )
        return f"{what} for {self.for_}" if self.for_.total_seconds() else what


class Expectation(_S):
    condition: Condition
    tier: Tier
    state: Literal["firing", "acknowledged", "resolved"] = "firing"
    within: Duration = Field(
        parse_duration("60s"),
        description="wall-clock time allowed: from `after` when given, else from the end of the timeline",
    )
    after: Duration | None = Field(
        None,
        description="scenario time of the event that makes the condition true; "
        "with it, an alert that comes later than `within` after that event is late",
    )
    where: Literal["clinic", "county"] = Field(
        "clinic",
        description="which broker the alert must reach: the clinic's "
        "or, through the uplink, the county's (needs --stack)",
    )


class Scenario(_S):
    name: str = "scenario"
    clinic: str | None = None
    time_scale: float = Field(1.0, gt=0, le=1_000_000)
    devices: dict[str, DeviceSpec]
    timeline: list[TimelineEvent] = Field(default_factory=list)
    models: list[ModelRun] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)
    forbid: list[Condition] = Field(default_factory=list, description="conditions that must NOT be raised")
    infrastructure: list[InfraEvent] = Field(
        default_factory=list,
        description="uplink, broker and gateway events on the same clock as the timeline (needs --stack)",
    )
    uplink: bool = Field(False, description="run a county broker and forward to it (implied by `uplink:` events)")
    expect_forwarded: bool = Field(
        False, description="every reading stored and every alert raised must reach the county broker (needs --stack)"
    )
    seed: int = 0
    gateway: dict[str, Any] = Field(
        default_factory=dict,
        description="clinic-level config the gateway under test "
        "should have (e.g. thresholds); used by the test harness",
    )

    @model_validator(mode="after")
    def _known_devices(self) -> Scenario:
        for i, ev in enumerate(self.timeline):
            if ev.device not in self.devices:
                raise ValueError(f"timeline[{i}] uses device {ev.device!r}, which is not under devices:")
        for i, m in enumerate(self.models):
            if m.device not in self.devices:
                raise ValueError(f"models[{i}] uses device {m.device!r}, which is not under devices:")
        return self

    @property
    def needs_stack(self) -> bool:
        """True when the scenario breaks infrastructure or checks the county side."""
        return bool(
            self.infrastructure or self.uplink or self.expect_forwarded or any(e.where == "county" for e in self.expect)
        )

    @property
    def has_uplink(self) -> bool:
        return (
            self.uplink
            or self.expect_forwarded
            or any(e.uplink for e in self.infrastructure)
            or any(e.where == "county" for e in self.expect)
        )

    def model_events(self) -> list[TimelineEvent]:
        """The readings each patient model produces, as ordinary timeline events."""
        from simulators.patient_models import BpModel, GlucoseModel

        out: list[TimelineEvent] = []
        for m in self.models:
            model = (BpModel if m.model == "blood_pressure" else GlucoseModel)(seed=m.seed, **m.params)
            t = m.start.total_seconds()
            while t <= m.end.total_seconds():
                hour = (8.0 + t / 3600.0) % 24.0  # scenarios start at 08:00 patient time
                if isinstance(model, BpModel):
                    sys_, dia, pulse = model.at(t, hour)
                    out.append(
                        TimelineEvent(
                            at=timedelta(seconds=t),
                            device=m.device,
                            blood_pressure=BpEvent(systolic=sys_, diastolic=dia, pulse=pulse),
                        )
                    )
                else:
                    out.append(
                        TimelineEvent(
                            at=timedelta(seconds=t),
                            device=m.device,
                            glucose=GlucoseEvent(mmol_l=model.at(t, hour), meal=model.meal_label(hour)),
                        )
                    )
                t += m.every.total_seconds()
        return out


def load_scenario(path: str | Path) -> Scenario:
    return Scenario.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def _duration(e: TimelineEvent, base_dir: Path | None) -> float:
    if e.ecg:
        return e.ecg.duration.total_seconds()
    if e.strip:
        return e.strip.seconds
    if e.replay:
        if e.replay.duration is not None:
            return e.replay.duration.total_seconds()
        from simulators.record_replay import RecordPatch

        return RecordPatch.seconds_of(_resolve(e.replay.record, base_dir)) - e.replay.start.total_seconds()
    return 0.0


def _resolve(record: str, base_dir: Path | None) -> str:
    p = Path(record)
    if not p.is_absolute() and base_dir is not None and (base_dir / (record + ".hea")).exists():
        return str(base_dir / record)
    return str(p)


def expand(
    sc: Scenario, clinic: str, end: datetime | None = None, base_dir: Path | None = None
) -> list[tuple[float, Message]]:
    """(scenario second, message) for every publish, in time order; ECG streams become 1-s frames."""
    devices: dict[str, Any] = {}
    for dev_id, spec in sc.devices.items():
        if spec.kind == "blood_pressure":
            devices[dev_id] = BpCuff(clinic, dev_id, gatt=spec.gatt)
        elif spec.kind == "glucose":
            devices[dev_id] = GlucoseMeter(clinic, dev_id, gatt=spec.gatt)
        elif spec.kind == "spo2":
            devices[dev_id] = Spo2Clip(clinic, dev_id)
        elif spec.kind == "ecg_handheld":
            devices[dev_id] = EcgHandheld(clinic, dev_id, seed=zlib.crc32(f"{sc.seed}:{dev_id}".encode()) % 1000)
        else:
            devices[dev_id] = EcgPatch(
                clinic, dev_id, fs=spec.fs, seed=zlib.crc32(f"{sc.seed}:{dev_id}".encode()) % 1000, gatt=spec.gatt
            )
    strip_makers: dict[str, EcgHandheld] = {}
    events = [*sc.timeline, *sc.model_events()]
    span = max(e.at.total_seconds() + _duration(e, base_dir) for e in events) if events else 0
    end = end or now_local()
    base = end - timedelta(seconds=span)
    planned: list[tuple[float, int, TimelineEvent]] = []
    for i, ev in enumerate(events):
        planned.append((ev.at.total_seconds(), i, ev))
    planned.sort(key=lambda p: (p[0], p[1]))
    out: list[tuple[float, Message]] = []
    for at, _, ev in planned:
        dev = devices[ev.device]
        spec = sc.devices[ev.device]
        when = base + timedelta(seconds=at)
        if spec.clock_skew:
            when = when - spec.clock_skew if spec.clock_behind else when + spec.clock_skew
        if ev.blood_pressure:
            b = ev.blood_pressure
            out.append((at, dev.measure(when, b.systolic, b.diastolic, b.pulse, b.body_movement, b.cuff_loose)))
        elif ev.glucose:
            g = ev.glucose
            out.append((at, dev.measure(when, g.mmol_l, g.meal, g.hi, g.lo)))
        elif ev.spo2:
            out.append((at, dev.measure(when, ev.spo2.spo2, ev.spo2.pulse)))
        elif ev.raw is not None:
            out.append((at, (reading_topic(clinic, ev.device), ev.raw.encode())))
        elif ev.strip:
            st = ev.strip
            if not isinstance(dev, EcgHandheld):  # a patch's strip: numbered apart from its frames
                dev = strip_makers.setdefault(ev.device, EcgHandheld(clinic, ev.device, fs=spec.fs))
            maker = dev
            out.append((at, maker.strip(when, st.rhythm, st.hr, st.seconds, st.artefact)))
        elif ev.battery is not None:
            out.append((at, (gatt_topic(clinic, ev.device, "2a19"), bytes([ev.battery]))))
        elif ev.replay:
            from simulators.record_replay import RecordPatch

            patch = RecordPatch(clinic, ev.device, _resolve(ev.replay.record, base_dir))
            dur = _duration(ev, base_dir)
            for k, msg in patch.frames(when, start_s=ev.replay.start.total_seconds(), duration_s=dur):
                out.append((at + k, msg))
        elif ev.ecg:
            e = ev.ecg
            dev.synth.set_rhythm(e.rhythm, e.hr, pvc_fraction=e.pvc_fraction, pause_s=e.pause_s)
            dev.synth.set_artefact(e.artefact)
            dev.lead_off = e.lead_off
            for k in range(int(e.duration.total_seconds())):
                out.append((at + k, dev.frame(when + timedelta(seconds=k))))
    for dev_id, spec in sc.devices.items():
        if spec.battery:
            drain, every = spec.battery, spec.battery.every.total_seconds()
            k = 0
            while k * every <= span:
                level = max(0, round(drain.start - drain.per_hour * k * every / 3600.0))
                out.append((k * every, (gatt_topic(clinic, dev_id, "2a19"), bytes([level]))))
                k += 1
    out = apply_behaviours(sc, clinic, out)
    out.sort(key=lambda p: p[0])
    return out


def _device_of(topic: str) -> str:
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 else ""


def apply_behaviours(sc: Scenario, clinic: str, messages: list[tuple[float, Message]]) -> list[tuple[float, Message]]:
    """Offline windows (hold or lose), drops, duplicates and reordering, per device, seeded."""
    import random

    rng = random.Random(sc.seed)
    out: list[tuple[float, Message]] = []
    for at, msg in sorted(messages, key=lambda p: p[0]):
        spec = sc.devices.get(_device_of(msg[0]))
        if spec is None:
            out.append((at, msg))
            continue
        window = next((w for w in spec.offline if w.start.total_seconds() <= at < w.end.total_seconds()), None)
        if window is not None:
            if not window.stores:
                continue
            # Stored on the device, sent in order when it reconnects (device time unchanged).
            at = window.end.total_seconds() + (at - window.start.total_seconds()) * 1e-3
        if spec.drop_rate and rng.random() < spec.drop_rate:
            continue
        out.append((at, msg))
        if spec.duplicate_rate and rng.random() < spec.duplicate_rate:
            out.append((at + 0.05, msg))
    # Reordering: swap a message with its device's next one.
    by_dev: dict[str, list[int]] = {}
    for i, (_, msg) in enumerate(out):
        by_dev.setdefault(_device_of(msg[0]), []).append(i)
    for dev_id, idx in by_dev.items():
        spec = sc.devices.get(dev_id)
        if not spec or not spec.reorder_rate:
            continue
        for a, b in zip(idx, idx[1:]):
            if rng.random() < spec.reorder_rate:
                (ta, ma), (tb, mb) = out[a], out[b]
                out[a], out[b] = (ta, mb), (tb, ma)
    return out


async def play(
    sc: Scenario,
    host: str,
    port: int,
    clinic: str,
    progress: bool = False,
    base_dir: Path | None = None,
    stack: Stack | None = None,
    t0: float | None = None,
) -> int:
    """Publish the scenario against a broker at its time scale; returns messages sent.

    Like a device with memory, the publisher keeps a message it could not hand to the broker
    (a broker restart) and sends it when the broker is back. With a `stack`, the scenario's
    infrastructure events run on the same clock.
    """
    messages = expand(sc, clinic, base_dir=base_dir)
    loop = asyncio.get_running_loop()
    t0 = loop.time() if t0 is None else t0
    infra = asyncio.create_task(run_infrastructure(sc, stack, t0)) if sc.infrastructure else None
    if sc.infrastructure and stack is None:
        raise ValueError("this scenario has infrastructure events: run it with --stack")
    i = 0
    ident = f"vitalgate-sim-{clinic}-{os.getpid()}"
    while i < len(messages):
        try:
            async with aiomqtt.Client(host, port, identifier=ident, timeout=5) as client:
                while i < len(messages):
                    at, (topic, payload) = messages[i]
                    delay = t0 + at / sc.time_scale - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await client.publish(topic, payload, qos=1)
                    i += 1
                    if progress and i % 200 == 0:
                        log.info("published %d/%d", i, len(messages))
        except aiomqtt.MqttError as exc:
            if stack is None:
                raise
            log.warning(
                "clinic broker unreachable; the devices keep their readings and retry",
                extra={"error": str(exc), "pending": len(messages) - i},
            )
            await asyncio.sleep(0.3)
    if infra is not None:
        await infra  # e.g. the uplink comes back after the last reading
    return len(messages)


async def run_infrastructure(sc: Scenario, stack: Stack | None, t0: float) -> None:
    """Each infrastructure event at its scenario time: break something, and mend it `for` later."""
    assert stack is not None
    loop = asyncio.get_running_loop()

    async def one(ev: InfraEvent) -> None:
        await asyncio.sleep(max(0.0, t0 + ev.at.total_seconds() / sc.time_scale - loop.time()))
        down_s = ev.for_.total_seconds() / sc.time_scale
        log.info("infrastructure: %s", ev.describe(), extra={"at": str(ev.at), "down_wall_s": round(down_s, 2)})
        if ev.uplink:
            await asyncio.to_thread(stack.uplink_down)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(stack.uplink_up)
            log.info("infrastructure: uplink back")
        elif ev.broker:
            await asyncio.to_thread(stack.broker_down)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(stack.broker_up)
            log.info("infrastructure: clinic broker back")
        else:
            rc = await asyncio.to_thread(stack.gateway_down, ev.gateway == "kill")
            log.info("infrastructure: gateway stopped", extra={"rc": rc})
            await asyncio.sleep(down_s)
            await asyncio.to_thread(stack.gateway_up)
            await asyncio.to_thread(stack.wait_online)
            log.info("infrastructure: gateway back online")

    await asyncio.gather(*(one(ev) for ev in sc.infrastructure))


def _note_alert(sink: list[dict], loop: asyncio.AbstractEventLoop, msg: aiomqtt.Message) -> None:
    sink.append({"topic": str(msg.topic), "_seen_at": loop.time(), **json.loads(bytes(msg.payload))})


async def watch_alerts(
    host: str,
    port: int,
    clinic: str,
    sink: list[dict],
    ready: asyncio.Event,
    stop: asyncio.Event,
    persistent: bool = False,
) -> None:
    """Record every alert on the clinic broker. `persistent`: a session that outlives a broker
    restart (only with --stack: on someone else's broker it would leave a queue behind)."""
    ident = f"vitalgate-sim-watch-{clinic}-{os.getpid()}"
    while not stop.is_set():
        try:
            async with aiomqtt.Client(host, port, identifier=ident, clean_session=not persistent) as client:
                await client.subscribe(f"vg/{clinic}/alert/+", qos=1)
                ready.set()
                loop = asyncio.get_running_loop()
                await consume_until(
                    client,
                    stop,
                    functools.partial(_note_alert, sink, loop),
                )
        except aiomqtt.MqttError:
            if not persistent:
                raise
            await asyncio.sleep(0.3)


def _topic_tier(alert: dict) -> str:
    topic = alert.get("topic")
    return topic.rsplit("/", 1)[-1] if topic else str(alert.get("tier"))


def diff_expectations(
    expected: list[Expectation],
    seen: list[dict],
    forbid: list[Condition] | None = None,
    county_seen: list[dict] | None = None,
    t0: float | None = None,
    time_scale: float = 1.0,
) -> list[str]:
    """Readable lines for every expected alert that did not come out, and every forbidden one that did.

    `seen` are the alerts on the clinic broker, `county_seen` those on the county broker; each may
    carry `_seen_at` (monotonic seconds). With the play's start `t0`, an expectation with `after`
    is met only by an alert that came within `within` of that event (played at `time_scale`)."""
    missing = []
    for c in forbid or []:
        hits = [a for a in seen if a.get("condition") == c.value]
        if hits:
            missing.append(f"unexpected: {c.value} raised on {', '.join(sorted({_topic_tier(a) for a in hits}))}")
    for e in expected:
        pool = seen if e.where == "clinic" else (county_seen or [])
        where = "" if e.where == "clinic" else " at the county"
        # The tier that counts is the topic the alert arrived on: an emergency alert is also
        # published on the county topic (its payload still says tier "emergency").
        hits = [
            a
            for a in pool
            if a.get("condition") == e.condition.value and _topic_tier(a) == e.tier.value and a.get("state") == e.state
        ]
        if not hits:
            got = sorted({f"{a.get('condition')}@{_topic_tier(a)}:{a.get('state')}" for a in pool})
            missing.append(
                f"missing{where}: {e.condition.value} on {e.tier.value} ({e.state}); saw: {', '.join(got) or 'nothing'}"
            )
            continue
        if e.after is not None and t0 is not None:
            event_at = t0 + e.after.total_seconds() / time_scale
            first = min(a.get("_seen_at", float("inf")) for a in hits)
            if first - event_at > e.within.total_seconds():
                missing.append(
                    f"missing{where} (late): {e.condition.value} on {e.tier.value} came "
                    f"{first - event_at:.1f} s after the event at {e.after}, allowed {e.within}"
                )
    return missing
