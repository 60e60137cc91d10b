"""An MQTT client with credentials, for the locked broker's tests."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt


class Client:
    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.rc: int | None = None
        self._lock = threading.Lock()
        connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic_ns()}")
        if user is not None:
            self.c.username_pw_set(user, password)

        def on_connect(c, userdata, flags, rc, props=None):
            self.rc = rc.value if hasattr(rc, "value") else int(rc)
            connected.set()

        def on_message(c, userdata, msg):
            with self._lock:
                self.got.append((msg.topic, bytes(msg.payload)))

        self.c.on_connect = on_connect
        self.c.on_message = on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        connected.wait(10)

    def sub(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)
        time.sleep(0.3)

    def pub(self, topic: str, payload: bytes = b"{}") -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.got}

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
