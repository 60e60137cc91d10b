"""Cut the small real ECG slices that ship with the tests (``tests/data/ecg``).

    python scripts/make_ecg_slices.py [--data ../shared/data/ecg] [--out tests/data/ecg]

Each slice is a stretch of a PhysioNet record from the full development set
(``../shared/data/ecg``, see its README).  Samples are copied as stored
(digital values, the original fs, gain, baseline, ADC resolution and format:
212 for MIT-BIH and vfdb, 16 for the 2015 alarm's lead, whose ``.mat`` file is
rewritten as a plain ``.dat``), so a slice reads exactly like the same stretch
of the full record.  Reference annotations in the range are kept, their
sample numbers shifted to the slice; the rhythm in effect when the slice
starts (and an open ``[`` flutter/fibrillation span) is restated by an
annotation at sample 0, because the evaluation only knows a rhythm from its
``+`` annotation.  2017 strips are small and copied as they are, with their
``REFERENCE.csv`` lines.

The output depends on the source files only (no dates, no random numbers):
re-running it gives byte-identical files.  ``tests/data/ecg/README.md`` lists
the slices, their sources and licences; keep both in step with ``SLICES``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ecg"
OUT = ROOT / "tests" / "data" / "ecg"


@dataclass(frozen=True)
class Slice:
    source: str  # record path under the data set, e.g. "mitdb/201"
    start_s: int  # slice start and end, seconds from the record start
    end_s: int | None  # None: to the end of the record
    channels: tuple[int, ...] | None = None  # None: every channel
    why: str = ""

    @property
    def name(self) -> str:
        """``<record>_<start s>``, or the record's own name when the whole record is kept."""
        rec = self.source.split("/")[-1]
        return rec if self.start_s == 0 and self.end_s is None else f"{rec}_{self.start_s}"


SLICES = (
    Slice("mitdb/119", 60, 240, why="sinus rhythm with PVCs in bigeminy and trigeminy"),
    Slice("mitdb/200", 1040, 1160, why="three ventricular tachycardia runs amid sinus rhythm and bigeminy"),
    Slice("mitdb/201", 300, 560, why="atrial fibrillation ending, then a 37-s paroxysm (onset and offset)"),
    Slice("mitdb/102", 40, 200, why="paced rhythm with two stretches of sinus rhythm"),
    Slice("mitdb/104", 600, 800, why="paced rhythm with fusion and sinus beats, in noise"),
    # vfdb names both channels "ECG", which wfdb refuses to write: the first (the one analysed) is kept.
    Slice("vfdb/422", 1290, 1620, channels=(0,), why="sinus rhythm, sustained VT, then ventricular fibrillation"),
    # The whole 5-min record (the challenge judges the alarm at 5:00 on what precedes it), lead II only.
    Slice("challenge2015/v158s", 0, None, channels=(0,), why="true ventricular tachycardia alarm"),
)
STRIPS_2017 = ("A00001", "A00972", "A01070")  # normal, AF (60 s), too noisy ("~")


def cut(src: Path, sl: Slice, out_dir: Path) -> Path:
    """Write one slice (header, signal, and the ``atr`` annotations if the source has them)."""
    header = wfdb.rdheader(str(src))
    fs = float(header.fs)
    a = int(round(sl.start_s * fs))
    b = header.sig_len if sl.end_s is None else int(round(sl.end_s * fs))
    channels = list(sl.channels) if sl.channels is not None else None
    rec = wfdb.rdrecord(str(src), sampfrom=a, sampto=b, channels=channels, physical=False)
    name = sl.name
    rec.record_name = name
    rec.file_name = [f"{name}.dat"] * rec.n_sig
    # A .mat signal file (2015 challenge, format "16+24") becomes a plain format-16 .dat.
    rec.fmt = [f.split("+")[0] for f in rec.fmt]
    rec.byte_offset = [None] * rec.n_sig
    rec.sig_len = rec.d_signal.shape[0]
    rec.init_value = [int(v) for v in rec.d_signal[0]]
    rec.checksum = rec.calc_checksum()
    note = (
        f"Slice of PhysioNet {sl.source}, samples {a}-{b} ({a / fs:g}-{b / fs:g} s), "
        f"cut by vitalgate scripts/make_ecg_slices.py"
    )
    rec.comments = [note] + list(rec.comments or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    rec.wrsamp(write_dir=str(out_dir))
    if src.with_suffix(".atr").exists():
        _cut_annotations(src, name, a, b, out_dir)
    return out_dir / name


def _cut_annotations(src: Path, name: str, a: int, b: int, out_dir: Path) -> None:
    ann = wfdb.rdann(str(src), "atr")
    sample = np.asarray(ann.sample)
    aux = [x or "" for x in (ann.aux_note or [""] * len(sample))]
    keep = np.flatnonzero((sample >= a) & (sample < b))
    before = np.flatnonzero(sample < a)
    rows = []
    rhythm = next((aux[i] for i in before[::-1] if ann.symbol[i] == "+" and aux[i].startswith("(")), None)
    in_vf = next((ann.symbol[i] == "[" for i in before[::-1] if ann.symbol[i] in "[]"), False)
    first = keep[0] if len(keep) else None
    if rhythm and not (first is not None and sample[first] == a and ann.symbol[first] == "+"):
        rows.append((0, "+", 0, 0, 0, rhythm))
    if in_vf:
        rows.append((0, "[", 0, 0, 0, ""))
    rows += [
        (int(sample[i] - a), ann.symbol[i], int(ann.subtype[i]), int(ann.chan[i]), int(ann.num[i]), aux[i])
        for i in keep
    ]
    s, sym, sub, chan, num, notes = zip(*rows)
    wfdb.wrann(
        name,
        "atr",
        np.array(s, dtype=np.int64),
        symbol=list(sym),
        subtype=np.array(sub),
        chan=np.array(chan),
        num=np.array(num),
        aux_note=list(notes),
        write_dir=str(out_dir),
    )


def copy_2017(data: Path, out: Path) -> None:
    src, dst = data / "challenge2017", out / "challenge2017"
    dst.mkdir(parents=True, exist_ok=True)
    for name in STRIPS_2017:
        for ext in (".hea", ".mat"):
            shutil.copyfile(src / f"{name}{ext}", dst / f"{name}{ext}")
    lines = [ln for ln in (src / "REFERENCE.csv").read_text().splitlines() if ln.split(",")[0] in STRIPS_2017]
    (dst / "REFERENCE.csv").write_text("".join(ln + "\n" for ln in lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the full ECG data set (default %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the slices go (default %(default)s)")
    args = parser.parse_args(argv)
    if not (args.data / "mitdb").is_dir():
        print(f"make_ecg_slices: no ECG data set at {args.data}", file=sys.stderr)
        return 2
    for sl in SLICES:
        db = sl.source.split("/")[0]
        path = cut(args.data / sl.source, sl, args.out / db)
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + ".*"))
        print(f"{db}/{path.name}: {sl.why} ({size:,} bytes)")
    copy_2017(args.data, args.out)
    total = sum(
        p.stat().st_size for p in args.out.rglob("*") if p.is_file() and p.name not in ("README.md", ".gitattributes")
    )
    print(f"total {total:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
