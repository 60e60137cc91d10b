"""Replay a real WFDB record as an ECG patch: 1-s frames in µV, with its reference annotations as ground truth.

The record is read with the same reader `vitalgate ecg-eval` uses (lead
choice, units), so a replay through the gateway and an `ecg-eval` run see the
same samples. `ground_truth()` turns the reference rhythm annotations into
the alerts an end-to-end check should expect.

    python -m simulators.record_replay ../shared/data/ecg/mitdb/201 --broker 127.0.0.1:1883 \
        --clinic demo-clinic --device ecg-0001 --speed 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np

from simulators.devices import Message, reading_topic
from stream.models import iso


class RecordPatch:
    def __init__(self, clinic: str, device_id: str, record_path: str) -> None:
        from stream.ecg.evaluation import read_record

        self.clinic = clinic
        self.device_id = device_id
        self.record = read_record(record_path)
        self.seq = 0

    @staticmethod
    def seconds_of(record_path: str) -> float:
        from stream.extras import need

        wfdb = need("wfdb", "records", "replaying WFDB records")
        try:
            h = wfdb.rdheader(record_path)
            return float(h.sig_len) / float(h.fs)
        except Exception:
            from stream.ecg.evaluation import read_record

            return read_record(record_path).seconds

    @property
    def fs(self) -> float:
        return self.record.fs

    def frames(
        self, start_time: datetime, start_s: float = 0.0, duration_s: float | None = None
    ) -> Iterator[tuple[float, Message]]:
        """(offset s, message) for each 1-s frame from `start_s`, device time starting at `start_time`."""
        x = self.record.signal_uv
        fs = self.record.fs
        n_per = int(round(fs))
        first = int(start_s * fs)
        last = len(x) if duration_s is None else min(len(x), first + int(duration_s * fs))
        fs_out = int(round(fs))
        for k, i in enumerate(range(first, last - n_per + 1, n_per)):
            chunk = np.nan_to_num(x[i : i + n_per], nan=0.0)
            self.seq += 1
            body = {
                "kind": "ecg",
                "ts": iso(start_time + timedelta(seconds=k)),
                "seq": self.seq,
                "fs": fs_out,
                "samples_uv": [int(v) for v in np.round(chunk)],
                "lead_off": False,
            }
            yield float(k), (reading_topic(self.clinic, self.device_id), json.dumps(body).encode())

    def ground_truth(self, min_af_s: float = 30.0) -> list[dict]:
        """Reference episodes as expected alert conditions with their times in the record (s)."""
        from stream.ecg.evaluation import rhythm_episodes, ventricular_runs, vf_spans

        out: list[dict] = []
        for label, t0, t1 in rhythm_episodes(self.record):
            if label in ("(AFIB", "(AFL") and t1 - t0 >= min_af_s:
                out.append({"condition": "af", "start_s": t0, "end_s": t1})
            elif label == "(VT":
                out.append({"condition": "vt_sustained" if t1 - t0 >= 30 else "vt", "start_s": t0, "end_s": t1})
        for t0, t1 in vf_spans(self.record):
            out.append({"condition": "vt_sustained", "start_s": t0, "end_s": t1})
        for t0, t1 in ventricular_runs(self.record):
            out.append({"condition": "vt", "start_s": t0, "end_s": t1, "source": "V-beat run"})
        return sorted(out, key=lambda e: e["start_s"])


async def _replay(args: argparse.Namespace) -> int:
    import aiomqtt

    host, _, port = args.broker.rpartition(":")
    patch = RecordPatch(args.clinic, args.device, args.record)
    total = patch.record.seconds - args.start
    if args.duration:
        total = min(total, args.duration)
    start_time = datetime.now().astimezone()  # frames stamped from now, one device second apart
    async with aiomqtt.Client(host, int(port)) as client:
        t0 = time.monotonic()
        sent = 0
        for k, (topic, payload) in patch.frames(start_time, args.start, total):
            delay = t0 + k / args.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.publish(topic, payload, qos=1)
            sent += 1
            if sent % 30 == 0 or k + 1 >= int(total):
                done = min(1.0, (k + 1) / max(total, 1))
                bar = "#" * int(done * 30)
                print(
                    f"\r{patch.record.name} [{bar:<30}] {k + 1:.0f}/{total:.0f} s", end="", file=sys.stderr, flush=True
                )
    print(file=sys.stderr)
    print(
        json.dumps(
            {"record": patch.record.name, "frames": sent, "fs": patch.fs, "ground_truth": patch.ground_truth()},
            indent=1,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulators.record_replay", description=__doc__.split("\n")[0])
    ap.add_argument("record", help="WFDB record path without extension")
    ap.add_argument("--broker", default="127.0.0.1:1883")
    ap.add_argument("--clinic", default="demo-clinic")
    ap.add_argument("--device", default="ecg-0001")
    ap.add_argument("--speed", type=float, default=1.0, help="record seconds per wall second")
    ap.add_argument("--start", type=float, default=0.0, help="seconds into the record")
    ap.add_argument("--duration", type=float, default=None)
    return asyncio.run(_replay(ap.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
