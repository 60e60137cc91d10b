"""The record splits the ECG analyser is validated on, fixed before any tuning (issue 15).

A figure counts only on records the method was not tuned on.  The splits are by
record (never by beat: a patient's beats resemble each other, so a beat-level
split leaks the patient into training).

* MIT-BIH (the 41 records in ``shared/data/ecg/mitdb``): four folds by record,
  paced records (102, 104, 107, 217) spread over them and reported separately
  too.  The learned beat model for fold *k* is trained on the other three
  folds; the shipped model on all four.  Folds were balanced by hand on
  ventricular-beat counts from the reference annotations only.
* The hand-set rhythm constants were tuned on the twelve first-wave records
  (``RULES_DEV``) before this split existed: figures on those records are
  training figures for the rules and are printed apart.
* vfdb (rhythm annotations only) and the 2015 VT alarms: two halves by record
  (A, B).  A rhythm constant changed from now on is chosen on half A and
  reported on half B.  The first-wave 2015 records and ``cu01`` were rules
  development records.
"""

from __future__ import annotations

MITDB_FOLDS: tuple[tuple[str, ...], ...] = (
    ("100", "102", "106", "114", "121", "201", "209", "214", "222", "232"),
    ("101", "104", "108", "109", "116", "123", "200", "210", "215", "230"),
    ("103", "105", "111", "118", "119", "203", "212", "217", "220", "228"),
    ("107", "112", "113", "117", "122", "124", "205", "207", "208", "221", "234"),
)
PACED = frozenset({"102", "104", "107", "217"})
# the records the rule-based parts (rhythms, artefacts, VT run rules) were developed on
RULES_DEV = frozenset(
    {
        "100",
        "105",
        "119",
        "200",
        "201",
        "203",
        "207",
        "208",
        "210",
        "221",
        "222",
        "232",
        "118e24",
        "cu01",
        "a103l",
        "a372s",
        "b124s",
        "t106s",
        "v128s",
        "v158s",
    }
)

# records looked at since the split to choose or reject a rule: training data from then on, so
# they leave the "untouched" group (MIT-BIH looked at in session 18: 214's multiform run, the
# false vt of 108 and 212; 2015 records of sessions 16-17, listed in docs/ecg.md)
LOOKED_AT = frozenset(
    {
        "108",
        "212",
        "214",
        "v122s",
        "v198s",
        "v348s",
        "v638s",
        "v640s",
        "v652s",
        "v682s",
        "v197l",
        "v423l",
        "v501l",
        "v749l",
    }
)


def untouched(record: str) -> bool:
    """Neither a rules development record nor one looked at since to choose a rule."""
    return record not in RULES_DEV and record not in LOOKED_AT


VFDB_HALVES: dict[str, tuple[str, ...]] = {
    "A": ("418", "421", "425", "428", "607", "615"),
    "B": ("420", "422", "427", "602", "611"),
}


def mitdb_fold(record: str) -> int:
    """The fold index of an MIT-BIH record (ValueError if it is in none)."""
    for k, fold in enumerate(MITDB_FOLDS):
        if record in fold:
            return k
    raise ValueError(f"MIT-BIH record {record} is in no fold")


def challenge2015_half(record: str) -> str:
    """Half "A" or "B" of a 2015 challenge record: alternate records in name order within each alarm
    letter, decided by the record number's parity (stable whatever subset is present)."""
    digits = "".join(ch for ch in record if ch.isdigit())
    return "A" if int(digits or 0) % 2 == 0 else "B"


def vfdb_half(record: str) -> str:
    for half, recs in VFDB_HALVES.items():
        if record in recs:
            return half
    raise ValueError(f"vfdb record {record} is in no half")
