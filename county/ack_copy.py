"""A second copy of each county acknowledgement, for clinics still on the MQTT uplink.

The acknowledgement of record goes on VG_CONTROL with a JetStream publish (county/engine.py): stored
by a quorum before the page gets its 202, and replayed to a native uplink from its durable consumer.
A gateway on a server's MQTT listener hears that copy only while it is connected: NATS hands
messages not published over MQTT to MQTT subscribers at QoS 0, and an MQTT persistent session
queues only QoS 1 messages that were published over MQTT. So the county also publishes the ack
over a server's MQTT listener at QoS 1, and the gateway's persistent uplink session
(outbound/uplink.py) gets it when it is back.

Best effort: a failed copy is logged and counted, never fails the acknowledgement. The gateway
applies an ack once however many copies arrive (the copy also lands on VG_CONTROL, since the listener
publishes it on `vg.{clinic}.ack`, so a native uplink reads it twice too). Acks are rare (a person
clicks), so each copy is one short connection, trying the listeners in order: no session to keep.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

log = logging.getLogger("vitalgate.county")

COPY_TIMEOUT_S = 3.0


def publish_copy(
    listeners: list[tuple[str, int]], client_id: str, topic: str, payload: bytes, timeout_s: float = COPY_TIMEOUT_S
) -> str | None:
    """Publish `payload` on `topic` at QoS 1 through the first listener that takes it; its host:port or None."""
    for host, port in listeners:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        connected = threading.Event()
        # bound per client: a late CONNACK of the previous listener's client must not set this one's event
        client.on_connect = lambda c, u, f, rc, p=None, ev=connected: ev.set() if not rc.is_failure else None
        try:
            client.connect(host, port, keepalive=10)
            client.loop_start()
            if not connected.wait(timeout_s):
                raise ConnectionError("no CONNACK")
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise ConnectionError("no PUBACK")
            return f"{host}:{port}"
        except (OSError, ConnectionError, RuntimeError, ValueError) as exc:
            log.warning("county ack copy over MQTT %s:%d failed (%r); trying the next listener", host, port, exc)
        finally:
            client.disconnect()
            client.loop_stop()
    return None
