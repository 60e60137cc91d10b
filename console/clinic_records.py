"""Read-only view of one clinic's storage, for the doctor's page, reports and the FHIR export.

Each store owns its tables and offers the queries others need; this is where
the read side opens them together: `ReadingQueries` over `readings.db`
(stream/store.py), `AlertQueries` over `alerts.db` (dispatch/alert_store.py)
and `RhythmQueries` over `rhythm.db` (stream/rhythm_log.py). Their read-only
connections are safe beside a running gateway (WAL readers never block the
writer) and after it has stopped; a file that does not exist yet reads as
empty.

Times: readings are keyed by device time (`ts`, +08:00, as stored); alert
times are gateway clock. Arguments `since`/`until` are aware datetimes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dispatch import alert_store
from stream import rhythm_log, store
from stream.store import EcgStrip

__all__ = ["ClinicRecords", "EcgStrip"]


class ClinicRecords:
    def __init__(self, storage: Path) -> None:
        self.storage = Path(storage)
        self._readings = store.ReadingQueries(self.storage / store.FILE_NAME)
        self._alerts = alert_store.AlertQueries(self.storage / alert_store.FILE_NAME)
        self._rhythm = rhythm_log.RhythmQueries(self.storage / rhythm_log.FILE_NAME)

    def close(self) -> None:
        for q in (self._readings, self._alerts, self._rhythm):
            q.close()

    # ------------------------------------------------------------ readings (the reading store)

    def readings(
        self,
        patient_id: str | None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        with_keys: bool = False,
    ) -> list[dict[str, Any]]:
        """Accepted readings (the public payload), oldest first by device time."""
        return self._readings.find(patient_id, kind, since, until, with_keys)

    def latest(self, patient_id: str, kind: str) -> dict[str, Any] | None:
        return self._readings.latest(patient_id, kind)

    def latest_battery(self, patient_id: str, device_id: str) -> dict[str, Any] | None:
        return self._readings.latest_battery(patient_id, device_id)

    def last_reading_at(self, patient_id: str, device_id: str) -> datetime | None:
        return self._readings.last_reading_at(patient_id, device_id)

    def first_reading_ts(self, patient_id: str, device_id: str) -> datetime | None:
        return self._readings.first_reading_ts(patient_id, device_id)

    def count_by_device(self, patient_id: str, since: datetime) -> dict[str, int]:
        return self._readings.count_by_device(patient_id, since)

    def ecg_latest(self, patient_id: str, seconds: float = 10.0) -> EcgStrip | None:
        return self._readings.ecg_latest(patient_id, seconds)

    def ecg_frames(
        self, patient_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[str, datetime, float, np.ndarray]]:
        return self._readings.ecg_frames(patient_id, since, until)

    def strips(
        self,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        labels: tuple[str, ...] | None = None,
        referred: bool | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Screening strips with their result (no samples), newest first (`ReadingQueries.strips`)."""
        return self._readings.strips(patient_id, since, until, labels, referred, limit)

    def strip(self, key: str) -> dict[str, Any] | None:
        """One screening strip with its samples (µV)."""
        return self._readings.strip(key)

    # ------------------------------------------------------------ rhythm (the rhythm log)

    def rhythm(self, patient_id: str, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        return self._rhythm.minutes(patient_id, since, until)

    def latest_rhythm(self, patient_id: str) -> dict | None:
        return self._rhythm.latest(patient_id)

    # ------------------------------------------------------------ alerts (the alert store)

    def alerts(self, patient_id: str | None = None, since: datetime | None = None) -> list[dict]:
        """Alerts (public payload) open at some time after `since`, oldest first, with their `transitions`."""
        return self._alerts.with_transitions(patient_id, since)
