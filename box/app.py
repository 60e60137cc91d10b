"""The gateway process: MQTT ingress -> stream core -> dispatcher, plus the retained status.

Shutdown order (SIGTERM/SIGINT): let the broker's already-delivered messages
be handled, drain every patient queue, flush the alert outbox, publish the
retained offline status, disconnect, exit 0.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import signal
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiomqtt

from box.config import GatewayConfig, PatientConfig
from box.systemd_notify import SystemdNotifier
from dispatch.alert_store import AlertStore
from dispatch.control import CONTROL_TOPICS, handle_control
from dispatch.dispatcher import Dispatcher
from dispatch.http_api import ApiServer, create_app
from gateway.ingress import DeviceBinding, DeviceRegistry, decode_message
from gateway.mqtt_link import Ack, MqttLink, NotConnected
from gateway.vendor_ecg_timing import RECENT_FRAMES, VendorEcgTimeBase
from outbound.nats_uplink import NatsUplink
from outbound.store_and_forward import StoreAndForward, no_ack
from outbound.uplink import DropAlarm, Uplink
from shards.ecg_analysis import DeferredEcg, EcgAnalysis
from shards.ecg_lane import EcgLane
from shards.ecg_shards import EcgShards, auto_workers
from shards.lanes import CRITICAL_RECEIVE_MAXIMUM, ECG_CLIENT_SUFFIX, is_critical, subscriptions
from stream.core import Counters, StreamCore
from stream.device_watch import DEFAULT_OFFLINE_AFTER, DeviceWatch, WatchedDevice
from stream.history import recent_readings_by_patient
from stream.models import Accepted, AckMessage, Finding, Rejected, Tier, iso, now_local
from stream.rhythm_log import RhythmLog
from stream.store import FILE_NAME as READINGS_FILE
from stream.store import ReadingQueries, ReadingStore, StoredFrameTime

if TYPE_CHECKING:
    from gateway.ble.ingress import BleIngress

log = logging.getLogger("vitalgate.gateway")

VERSION = "0.1.0"
WATCH_TICK_S = 1.0  # how often device silence is checked
ECG_CATCH_UP_ON_STOP_S = 2.0  # at shutdown the ECG analysis gets this long; the rest is analysed after the restart


def villages_of(patients: list[PatientConfig]) -> dict[str, list[str]]:
    """{village: [pseudonymous patient ids]} from `patients[].labels.village`; ids only, never names."""
    out: dict[str, list[str]] = {}
    for p in patients:
        village = p.labels.get("village")
        if isinstance(village, str) and village:
            out.setdefault(village, []).append(p.id)
    return out


def build_forwarding(
    config: GatewayConfig,
    store: ReadingStore,
    raise_finding: Callable[[Finding], Coroutine[Any, Any, object]],
    clock: Callable[[], datetime] = now_local,
) -> StoreAndForward:
    uplink: Uplink | NatsUplink | None = None
    if config.uplink is not None:
        u = config.uplink
        alarm = DropAlarm(raise_finding, clock)
        if u.nats:
            # native NATS: acknowledged by the replicated stream, so a server's loss loses nothing
            uplink = NatsUplink(
                config.clinic,
                config.storage.path,
                u.nats,
                max_outbox=u.max_outbox,
                on_drop=alarm.dropped,
                on_backlog=alarm.backlog,
                user=u.username,
                password=u.password,
            )
        else:
            uplink = Uplink(
                config.clinic,
                config.storage.path,
                u.host,
                u.port,
                max_outbox=u.max_outbox,
                username=u.username,
                password=u.password,
                tls=u.tls,
                ca_file=u.ca_file,
                keepalive=u.keepalive,
                cert_file=u.cert_file,
                key_file=u.key_file,
                on_drop=alarm.dropped,
                on_backlog=alarm.backlog,
            )
    tsdb = None
    influx = config.influxdb
    if influx is not None:
        from outbound.influx_sink import InfluxSink, InfluxWriter

        tsdb = InfluxSink(
            config.clinic,
            config.storage.path,
            InfluxWriter(influx.url, influx.token, influx.org, influx.bucket),
            batch_size=influx.batch_size,
            flush_interval_s=influx.flush_interval.total_seconds(),
            max_outbox=influx.max_outbox,
        )
    return StoreAndForward(store, config.storage.path, uplink=uplink, tsdb=tsdb)


class Gateway:
    def __init__(self, config: GatewayConfig, clock=now_local) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.clinic = config.clinic
        self.clock = clock
        self.prefix = f"vg/{self.clinic}"
        storage = config.storage.path
        storage.mkdir(parents=True, exist_ok=True)
        self.registry = DeviceRegistry([DeviceBinding(d.id, p.id, d.kind) for p in config.patients for d in p.devices])
        self.counters = Counters()
        self.store = ReadingStore(storage)
        self.alerts = AlertStore(storage)
        self.dispatcher = Dispatcher.from_config(config, self.alerts, clock=clock)
        # The HTTP API app; other parts (the village doctor's page) add routes to it before run().
        self.http_app = create_app(self.dispatcher, config.http.token) if config.http else None
        self.rhythm_log = RhythmLog(storage)  # per-minute ecg_summary: the page's heart rhythm, reports' AF burden
        # Readings are stored and staged for the uplink / TSDB together; acks follow the commits.
        self.forwarding = build_forwarding(config, self.store, self.dispatcher.handle, clock)
        if self.forwarding.uplink is not None:
            self.forwarding.uplink.listen(self.on_county_message)
        self.core = StreamCore(
            store=self.forwarding,
            thresholds={p.id: config.thresholds_for(p) for p in config.patients if p.thresholds},
            default_thresholds=config.thresholds,
            publish_reading=self._publish_reading,
            on_finding=self.dispatcher.handle,
            counters=self.counters,
            ecg=DeferredEcg(),  # this core is the critical lane's (shards/lanes.py): it sees no ECG frames
            queue_size=config.stream.queue_size,
            clock=clock,
        )
        # The ECG lane (shards/): its own core, so a patient's glucose never waits behind its own ECG frames;
        # frames are stored and acknowledged there, and analysed from the frame log behind the commit.
        self.ecg_core = StreamCore(
            store=self.forwarding,
            default_thresholds=config.thresholds,
            thresholds={p.id: config.thresholds_for(p) for p in config.patients if p.thresholds},
            publish_reading=self._publish_reading,
            on_finding=self.dispatcher.handle,
            counters=self.counters,
            ecg=DeferredEcg(),
            queue_size=config.stream.queue_size,
            clock=clock,
        )
        self.ecg_core.device_last_seen = self.core.device_last_seen  # one view of the devices (ids are unique)
        workers = config.shards.workers if config.shards.workers != "auto" else auto_workers()
        lag_warn = config.shards.ecg_lag_warn.total_seconds()
        self.ecg_analysis: EcgAnalysis | EcgShards = (
            EcgShards(storage, self.dispatcher.handle, self._publish_reading, workers, clock, lag_warn)
            if workers
            else EcgAnalysis(storage, self.dispatcher.handle, self._publish_reading, clock, lag_warn_s=lag_warn)
        )
        self._critical_devices = frozenset(b.device_id for b in self.registry if is_critical(b.kind))
        lanes = subscriptions(self.prefix, self._critical_devices, CONTROL_TOPICS)
        # Binary ECG frames' time base (gateway/vendor_ecg_timing.py), one for both sessions: what the critical
        # session had queued from before the lanes and the ECG session's frames continue one another.
        # Restored per device from its last stored frames, so a frame stored but not acknowledged before a
        # restart keeps its time (and key) when the broker redelivers it.
        self._frame_times = ReadingQueries(storage / READINGS_FILE)
        self.ecg_time = VendorEcgTimeBase(history=self._stored_frame_times)
        self.ecg_lane = EcgLane(
            self.prefix,
            self.registry,
            self._critical_devices,
            self.ecg_core,
            self.forwarding,
            self.counters,
            on_committed=self.ecg_analysis.wake,
            clock=clock,
            ecg_time=self.ecg_time,
        )
        b = config.broker
        self.link = MqttLink(
            b.host,
            b.port,
            client_id=f"vitalgate-{self.clinic}",
            subscriptions=lanes.critical,
            unsubscriptions=lanes.stale,
            on_message=self.on_message,
            on_connect=self._on_connect,
            will=aiomqtt.Will(f"{self.prefix}/status", self._status_json(online=False), qos=1, retain=True),
            username=b.username,
            password=b.password,
            tls=b.tls,
            ca_file=b.ca_file,
            keepalive=b.keepalive,
            manual_ack=True,  # a reading is acknowledged only once stored (outbound/store_and_forward.py)
            # MQTT 5 for its Receive Maximum: with the disk full, readings are judged but held unacknowledged
            # until stored, and under 3.1.1 Mosquitto stops after 20 such (max_inflight_messages): a severe
            # low sent after them would wait for the technician. This lane carries a few readings per
            # patient per hour, so paho's per-message Properties cost nothing here (unlike the ECG lane).
            # "auto": a broker without MQTT 5 (the demo's embedded amqtt) gets 3.1.1 and its window of 20.
            protocol="auto",
            receive_maximum=CRITICAL_RECEIVE_MAXIMUM,
        )
        # The ECG lane's session. MQTT 3.1.1 as the other: its window of 20 unacknowledged frames keeps moving
        # (acks follow each tick's commit), and MQTT 5's wider window cost more in paho's per-message
        # Properties than it gained (bench/load.py, 2,000 patches: 2,007 against 1,132 frames/s accepted).
        self.ecg_link = MqttLink(
            b.host,
            b.port,
            client_id=f"vitalgate-{self.clinic}{ECG_CLIENT_SUFFIX}",
            subscriptions=lanes.ecg,
            on_message=self.ecg_lane.on_message,
            username=b.username,
            password=b.password,
            tls=b.tls,
            ca_file=b.ca_file,
            keepalive=b.keepalive,
            manual_ack=True,
        )
        self.started_at = clock()
        self.notifier = SystemdNotifier()  # READY, the watchdog and a status line under systemd (deploy/)
        self.watch = DeviceWatch(
            # BLE devices: device_offline is BleIngress's (it also sees adverts and connects), missed_readings ours.
            [
                WatchedDevice(
                    d.id,
                    p.id,
                    d.kind,
                    None if d.ble else d.expected_interval or DEFAULT_OFFLINE_AFTER[d.kind],
                    d.schedule,
                    config.thresholds_for(p).missed_readings_overdue,
                )
                for p in config.patients
                for d in p.devices
            ],
            started_at=self.started_at,
        )
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.republish_failures = 0
        self.ble: BleIngress | None = None  # started by run() when the config has `ble:` devices
        if self.http_app is not None and config.http is not None:  # the doctor's console on the same port
            from console.web import ConsoleSources, mount_console

            mount_console(
                self.http_app,
                ConsoleSources(
                    clinic=self.clinic,
                    patients=config.patients,
                    storage=storage,
                    token=config.http.token,
                    tls=config.http.tls,
                    clock=clock,
                    stopping=self.stop_event,
                    alerts=self.alerts,
                    desk=self.dispatcher,
                    live=self,
                    strips=self,
                    accounts=config.http.accounts,
                ),
            )

    # ------------------------------------------------------------ inbound

    async def on_message(self, topic: str, payload: bytes, ack: Ack = no_ack) -> None:
        try:
            if topic == f"{self.prefix}/ack":
                await self._on_ack(payload)
                ack()
                return
            if topic.startswith(f"{self.prefix}/") and topic[len(self.prefix) + 1 :] in CONTROL_TOPICS:
                kind = topic[len(self.prefix) + 1 :]
                refused = await handle_control(self.dispatcher, kind, payload)
                if refused:
                    self.counters.reject(Rejected(reason=f"bad_{kind}", detail=refused, topic=topic))
                ack()
                return
            result = decode_message(topic, payload, self.clinic, self.registry, self.clock(), self.ecg_time)
            if isinstance(result, Rejected):
                self.counters.reject(result)
                ack()
                return
            core = self.core if result.device_id in self._critical_devices else self.ecg_core
            await core.submit(result, on_stored=self.forwarding.ack_after(result, ack))
        except Exception:  # nothing a device sends may take the gateway down
            log.exception("unexpected error handling a message", extra={"topic": topic})
            self.counters.rejected["internal_error"] += 1
            ack()

    async def on_county_message(self, topic: str, payload: bytes) -> None:
        """The county acknowledges (snoozes, silences) on this clinic's control topics on its broker:
        applied exactly as from the clinic's broker (``on_message``); nothing else is taken from there."""
        if topic == f"{self.prefix}/ack" or (
            topic.startswith(f"{self.prefix}/") and topic[len(self.prefix) + 1 :] in CONTROL_TOPICS
        ):
            log.info("control message from the county", extra={"topic": topic})
            await self.on_message(topic, payload)
        else:
            self.counters.reject(Rejected(reason="county_topic", detail="not a control topic", topic=topic))

    async def _submit_ble(self, acc: Accepted, on_stored: Callable[[], None] | None = None) -> None:
        """A BLE reading takes the MQTT path from here: the stream core, acknowledged once durable."""
        done = self.forwarding.ack_after(acc, on_stored) if on_stored is not None else None
        await (self.core if acc.device_id in self._critical_devices else self.ecg_core).submit(acc, on_stored=done)

    async def _on_ack(self, payload: bytes) -> None:
        try:
            ack = AckMessage.model_validate_json(payload)
        except ValueError as exc:
            self.counters.reject(
                Rejected(
                    reason="bad_ack",
                    detail=f"ack needs alert_id and by: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}",
                )
            )
            return
        alert = await self.dispatcher.acknowledge(ack.alert_id, ack.by)
        if alert is None:
            log.info("ack ignored: unknown alert or not firing", extra={"alert_id": ack.alert_id})

    # ------------------------------------------------------------ outbound

    def _stored_frame_times(self, device_id: str) -> list[StoredFrameTime]:
        binding = self.registry.get(device_id)
        if binding is None:
            return []
        return self._frame_times.ecg_frame_times(binding.patient_id, device_id, RECENT_FRAMES)

    async def _publish_reading(self, acc: Accepted) -> None:
        if acc.reading.kind == "ecg_summary":
            self.forwarding.forward(acc)  # derived, not stored: only forwarded (uplink, TSDB)
            self.rhythm_log.add(acc)
        # Handed to the connection in order, not awaited: the reading's own ack (after the commit)
        # and its rules need not wait a broker round trip for this PUBACK (bench/throughput.py).
        try:
            await self.link.publish_nowait(
                f"{self.prefix}/patient/{acc.patient_id}/reading",
                acc.public_json(),
                qos=1,
                on_error=functools.partial(self._republish_failed, patient_id=acc.patient_id),
            )
        except (NotConnected, aiomqtt.MqttError) as exc:
            self._republish_failed(exc, acc.patient_id)

    def _republish_failed(self, exc: BaseException, patient_id: str) -> None:
        # Stored already; only the live republish is missed (issue: store-and-forward uplink).
        self.republish_failures += 1
        log.warning("could not republish reading: %s", exc, extra={"patient_id": patient_id})

    async def _send_alert(self, tier: Tier, payload: str) -> None:
        self.forwarding.on_alert(f"{self.prefix}/alert/{tier.value}", payload)  # county first: durable outbox
        await self.link.publish(f"{self.prefix}/alert/{tier.value}", payload, qos=1)

    async def _on_connect(self) -> None:
        self.dispatcher.attach(self._send_alert)
        await self.publish_status()
        self.ready.set()

    def status(self, online: bool = True) -> dict:
        devices = {}
        for b in self.registry:
            seen = self.core.device_last_seen.get(b.device_id)
            devices[b.device_id] = {
                "patient_id": b.patient_id,
                "kind": b.kind.value,
                "last_seen": iso(seen) if seen else None,
            }
        active = self.alerts.active() if online else []
        return {
            "clinic": self.clinic,
            "online": online,
            "version": VERSION,
            "started_at": iso(self.started_at),
            "updated_at": iso(self.clock()),
            "devices": devices,
            "villages": villages_of(self.config.patients),  # the county's figures per village (county/weekly.py)
            "counters": {
                "accepted": dict(self.counters.accepted),
                "rejected": dict(self.counters.rejected),
                "accepted_total": sum(self.counters.accepted.values()),
                "rejected_total": sum(self.counters.rejected.values()),
                "alerts": dict(self.dispatcher.counters),
                "republish_failures": self.republish_failures,
            },
            "queue_depth": self.queue_depth(),
            "active_alerts": {t.value: sum(1 for s in active if s.alert.tier is t) for t in Tier},
            "last_rejections": self.counters.last_rejections,
            "dispatch": self.dispatcher.status() if online else {},
            **({"ble": self.ble.status()} if online and self.ble is not None else {}),
            **self.forwarding.status(),  # storage, uplink, tsdb
            "ecg_analysis": self.ecg_analysis.status(),  # its lag; the technical condition ecg_analysis_lagging
        }

    def _status_json(self, online: bool) -> str:
        if not online:
            return json.dumps({"clinic": self.clinic, "online": False, "version": VERSION})
        return json.dumps(self.status(online), ensure_ascii=False)

    async def publish_status(self, online: bool = True) -> None:
        payload = json.dumps(self.status(online), ensure_ascii=False)
        self.forwarding.on_status(payload)
        try:
            await self.link.publish(f"{self.prefix}/status", payload, qos=1, retain=True)
        except (NotConnected, aiomqtt.MqttError) as exc:
            log.warning("could not publish status: %s", exc)

    # ------------------------------------------------------------ live state (what the console reads)

    def device_last_seen(self, device_id: str) -> datetime | None:
        return self.core.device_last_seen.get(device_id)

    def ble_status(self) -> dict[str, dict]:
        return self.ble.status() if self.ble is not None else {}

    def queue_depth(self) -> int:
        return self.core.queue_depth() + self.ecg_core.queue_depth()

    def forwarding_status(self) -> dict:
        return self.forwarding.status()

    def mqtt_connected(self) -> bool:
        return self.link.connected.is_set()

    def ecg_analysis_status(self) -> dict:
        return self.ecg_analysis.status()

    def refer_strip(self, strip_key: str, by: str, note: str = "") -> bool | None:
        """The console's "referred" mark on a screening strip, kept in the reading store (who, when)."""
        self.forwarding.flush_now()  # this tick's reading transaction commits first; the mark commits on its own
        done = self.store.mark_referred(strip_key, by, self.clock(), note)
        if done:
            log.info("screening strip marked referred", extra={"strip": strip_key, "by": by})
        return done

    async def _status_loop(self, stop: asyncio.Event) -> None:
        interval = self.config.status.interval.total_seconds()
        loop = asyncio.get_running_loop()
        next_status = loop.time() + interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=WATCH_TICK_S)
            except TimeoutError:
                pass
            for finding in self.watch.check(self.clock(), self.core.device_last_seen):
                await self.dispatcher.handle(finding)
            self.notifier.tick(self._service_status())  # no tick (a hung loop): systemd's watchdog restarts us
            if loop.time() >= next_status and not stop.is_set():
                next_status = loop.time() + interval
                await self.publish_status()

    def _service_status(self) -> str:
        """One line for `systemctl status vitalgate` (ids and counts only)."""
        parts = ["broker " + ("connected" if self.link.connected.is_set() else "NOT connected, retrying")]
        parts.append("storage ok" if self.forwarding.storage_error is None else "storage FULL or failing")
        if self.forwarding.uplink is not None:
            u = self.forwarding.uplink
            parts.append(
                ("county uplink connected" if u.counts().get("connected") else "county uplink down")
                + f", {u.outbox.pending} waiting"
            )
        return "; ".join(parts)

    # ------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self.stop_event.set()

    def _restore_rule_state(self) -> None:
        """Windows and pending confirmations survive a restart (a power cut between a crisis and its repeat)."""
        history = recent_readings_by_patient(self.store.path, self.clock())
        restored = {p.id: self.core.restore(p.id, history.get(p.id, [])) for p in self.config.patients}
        for p in self.config.patients:  # (the ECG lane's core judges the patches' battery readings)
            self.ecg_core.restore(p.id, history.get(p.id, []))
        if any(restored.values()):
            log.info(
                "rule state restored from stored readings",
                extra={"patients": sum(1 for n in restored.values() if n), "readings": sum(restored.values())},
            )

    async def run(self, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        disconnect = asyncio.Event()
        dispatcher_stop = asyncio.Event()
        log.info(
            "vitalgate starting",
            extra={
                "clinic": self.clinic,
                "patients": len(self.config.patients),
                "devices": len(self.registry),
                "storage": str(self.config.storage.path),
                "broker": f"{self.config.broker.host}:{self.config.broker.port}",
            },
        )
        self._restore_rule_state()  # before any reading can arrive
        if install_signals:  # the process is ours (vitalgate run)
            # What start-up built (modules, config, restored rule state) lives as long as the process:
            # out of the collector's sight, its full collections walk only what came after. Under
            # load thousands of messages are in flight (inbox, patient queues), each a few objects:
            # with the default threshold (700) the collector walks them again and again while they
            # wait; at 20,000 its time per reading is about a third (bench/throughput.py).
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        link_task = asyncio.create_task(self.link.run(disconnect), name="mqtt")
        ecg_link_task = asyncio.create_task(self.ecg_link.run(disconnect), name="mqtt-ecg")
        ecg_stop = asyncio.Event()
        ecg_task = asyncio.create_task(self.ecg_analysis.run(ecg_stop), name="ecg-analysis")
        disp_task = asyncio.create_task(self.dispatcher.run(dispatcher_stop), name="dispatcher")
        status_task = asyncio.create_task(self._status_loop(self.stop_event), name="status")
        forwarding_stop = asyncio.Event()
        forwarding_task = asyncio.create_task(self.forwarding.run(forwarding_stop), name="forwarding")
        http_stop = asyncio.Event()
        http_task = None
        if self.http_app is not None and self.config.http is not None:
            h = self.config.http
            server = ApiServer(
                self.http_app, h.bind, h.port, (h.tls_cert, h.tls_key) if h.tls_cert and h.tls_key else None
            )
            http_task = asyncio.create_task(server.run(http_stop), name="http")
        self.ble = None  # the gateway connects to `ble:` devices itself (gateway/ble, docs/ble.md)
        if any(d.ble for p in self.config.patients for d in p.devices):
            from gateway.ble.ingress import BleIngress

            self.ble = BleIngress.from_config(
                self.config,
                submit=self._submit_ble,
                on_finding=self.dispatcher.handle,
                on_reject=self.counters.reject,
                clock=self.clock,
                start_after=self.ready,
            )
        ble_task = asyncio.create_task(self.ble.run(), name="ble") if self.ble else None
        self.notifier.ready(self._service_status())
        await self.stop_event.wait()
        self.notifier.stopping()
        log.info("stopping: handling what has arrived, flushing alerts")
        if self.ble is not None and ble_task is not None:
            await self.ble.close()  # disconnect politely; what the devices sent is submitted
            await ble_task
        await self.link.quiesce()
        await self.ecg_link.quiesce()
        await self.core.drain()
        await self.ecg_core.drain()
        self.forwarding.flush_now()  # the last frames committed, so the analysis sees them
        await self.ecg_analysis.catch_up(ECG_CATCH_UP_ON_STOP_S)
        ecg_stop.set()
        await ecg_task
        http_stop.set()
        if http_task is not None:
            await http_task
        dispatcher_stop.set()
        await disp_task
        await status_task
        await self.publish_status(online=False)
        await self.forwarding.finish()  # commit staged rows; the uplink gets a bounded time to send
        forwarding_stop.set()
        await forwarding_task
        disconnect.set()
        await link_task
        await ecg_link_task
        self.ecg_analysis.close()  # first: the writer's close checkpoints only as the last connection to readings.db
        self._frame_times.close()
        self.forwarding.close()
        self.store.close()
        self.alerts.close()
        self.rhythm_log.close()
        log.info(
            "stopped cleanly",
            extra={"accepted": sum(self.counters.accepted.values()), "rejected": sum(self.counters.rejected.values())},
        )
        return 0
