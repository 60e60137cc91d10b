"""A screening strip in the stream: judged off the event loop, stored with its result, republished thin.

`screen_strip` turns an accepted `EcgStripReading` (one MQTT message, docs/ecg-screening.md) into
a `ScreenedStrip`: the classifier of `stream/ecg/screening.py` (`screen()`, about 20 ms for a 30-s
strip) runs in a worker thread (`asyncio.to_thread`), so the event loop keeps taking other
patients' readings, acks and alerts meanwhile; this patient's worker waits for it, so the strip is
stored, republished and acknowledged in its place in the patient's order.

The result keeps the reading's idempotency key (the strip id), so the acknowledgement that waits
for the commit (outbound/store_and_forward.py) and a redelivery's de-duplication see the same
reading. A redelivered strip is screened again before the store says it is a duplicate: rare
(only a message not yet acknowledged when the connection dropped) and 20 ms.

Not an alert: no rule runs on it and nobody is paged; `af` and `other` go on the console's
referral list (console/web/pages.py, /screening).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from stream.models import Accepted, EcgStripReading, Rejected, ScreenedStrip

log = logging.getLogger("vitalgate.stream")


def screen_now(acc: Accepted) -> Accepted:
    """The screening itself, synchronously (tests, tools); `screen_strip` runs it in a thread."""
    from stream.ecg.screening import load_model, screen  # scipy and the model: loaded on first use

    r = acc.reading
    assert isinstance(r, EcgStripReading)
    res = screen(np.asarray(r.samples_uv, dtype=np.float64), r.fs)
    screened = ScreenedStrip(
        ts=r.ts,
        seq=r.seq,
        strip_id=r.strip_id,
        fs=r.fs,
        seconds=round(res.seconds, 3),
        lead=r.lead,
        label=res.label,
        confidence=round(float(res.confidence), 4),
        hr_bpm=float(res.hr_bpm) if res.hr_bpm else None,
        beats=int(res.beats),
        probabilities=dict(res.probabilities),
        model=load_model().version,
        samples_uv=r.samples_uv,
    )
    return acc.model_copy(update={"reading": screened})


async def screen_strip(acc: Accepted) -> Accepted | Rejected:
    """The strip with its result, or why it could not be screened (counted, never raised)."""
    try:
        return await asyncio.to_thread(screen_now, acc)
    except Exception as exc:  # a classifier fault must not cost the patient's stream
        log.exception("screening failed", extra={"patient_id": acc.patient_id, "device_id": acc.device_id})
        return Rejected(
            reason="screening_failed",
            detail=f"{acc.device_id}: strip {getattr(acc.reading, 'strip_id', '?')}: {type(exc).__name__}: {exc}",
            device_id=acc.device_id,
        )
