"""ECG analyser benchmark: speed, memory per patient, and peers used in a streaming way.

    python bench/ecg_realtime.py [--record PATH] [--peer-seconds 300] [--no-table] [--memory-sites N]

Prints:
1. the realtime factor of ``EcgAnalyser`` alone on a 30-min record, fed in 1-s
   frames (median of 3 runs; file reading excluded), and what that means in
   250 Hz patches per core (analysis only: no MQTT, no JSON decoding);
2. memory per patient (tracemalloc, 200 analysers after 2 min of signal each); with
   ``--memory-sites N``, also the N source lines that hold most of it (where to cut next);
3. peers used the only way a streaming user can use a batch detector: each
   second, re-run on the last 10 s and keep the beats in the newest second.
   wfdb's xqrs and gqrs always; neurokit2's default detector if importable
   (not needed by the gateway; ``pip install -e '.[bench]'`` installs it); the analyser
   on the same seconds, fed 1-s frames (the median of three passes: one pass is short);
4. the per-record score table of ``ecg-eval`` on the dev mitdb records.

The machines are shared and noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import doc_block  # noqa: E402

from stream.ecg import evaluation  # noqa: E402
from stream.ecg.analyser import EcgAnalyser  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg"
MITDB = ["100", "105", "119", "200", "201", "203", "207", "208", "210", "221", "222", "232"]


def analyser_rtf(x: np.ndarray, fs: float, runs: int = 3) -> float:
    n = int(round(fs))
    rates = []
    for _ in range(runs):
        an = EcgAnalyser(fs)
        gc.collect()
        t = time.perf_counter()
        for k in range(0, len(x), n):
            an.push(x[k : k + n])
            an.drain_beats()
            an.minute_summary()
        rates.append(len(x) / fs / (time.perf_counter() - t))
    return statistics.median(rates)


def memory_per_patient(
    x: np.ndarray, fs: float, patients: int = 200, seconds: int = 120, sites: int = 0
) -> tuple[float, list[tuple[str, float]]]:
    """Bytes per analyser, and the ``sites`` source lines holding most of them (bytes per analyser)."""
    n = int(round(fs))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    analysers = [EcgAnalyser(fs) for _ in range(patients)]
    for an in analysers:
        for k in range(0, seconds * n, n):
            an.push(x[k : k + n])
        an.drain_beats()
    gc.collect()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in snap.compare_to(base, "filename"))
    top = [
        (f"{Path(d.traceback[0].filename).name}:{d.traceback[0].lineno}", d.size_diff / patients)
        for d in snap.compare_to(base, "lineno")[:sites]
    ]
    del analysers
    return total / patients, top


def sliding(detect, x: np.ndarray, fs: float, seconds: int) -> tuple[float, list[float]]:
    """Re-run ``detect(window) -> sample indices`` each second on the last 10 s."""
    n = int(round(fs))
    w = 10 * n
    beats: list[float] = []
    t = time.perf_counter()
    for end in range(n, min(len(x), seconds * n) + 1, n):
        lo = max(0, end - w)
        idx = np.asarray(detect(x[lo:end]), dtype=np.int64)
        new = idx[idx >= (end - n - lo)] + lo  # beats in the newest second only
        beats.extend((new / fs).tolist())
    spent = time.perf_counter() - t
    return min(len(x), seconds * n) / fs / spent, beats


def peer_detectors(fs: float):
    import wfdb.processing as wp

    peers = {}

    def xqrs(win):
        return wp.xqrs_detect(win / 1000.0, fs, verbose=False)

    def gqrs(win):
        return wp.gqrs_detect(win / 1000.0, fs)

    peers["wfdb xqrs"] = xqrs
    peers["wfdb gqrs"] = gqrs
    try:
        import neurokit2 as nk

        def neurokit(win):
            _, info = nk.ecg_peaks(nk.ecg_clean(win, sampling_rate=int(fs)), sampling_rate=int(fs))
            return info["ECG_R_Peaks"]

        peers["neurokit2"] = neurokit
    except Exception:  # not installed: reported as such
        pass
    return peers


def score_beats(rec: evaluation.Record, det: list[float], seconds: float) -> tuple[float | None, float | None]:
    ref, _ = evaluation.reference_beats(rec)
    ref = ref[ref < seconds - 0.2]
    d = np.array([t for t in det if t < seconds - 0.2])
    tp, _ = evaluation.match_beats(ref, d, evaluation.MATCH_S)
    se = tp / len(ref) if len(ref) else None
    ppv = tp / len(d) if len(d) else None
    return se, ppv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", default=str(DATA / "mitdb" / "203"), help="30-min record for the speed run")
    p.add_argument("--peer-seconds", type=int, default=300, help="seconds of the record the peers re-run on")
    p.add_argument("--no-table", action="store_true", help="skip the per-record ecg-eval table")
    p.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    p.add_argument("--memory-sites", type=int, default=0, help="also list the N source lines holding most memory")
    args = p.parse_args(argv)
    with doc_block.captured(args.doc, "ecg_realtime", "python bench/ecg_realtime.py --no-table"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore")

    rec = evaluation.read_record(args.record)
    x, fs = rec.signal_uv, rec.fs
    print(f"record {rec.name}: {rec.seconds:.0f} s at {fs:g} Hz, lead {rec.lead}")

    rtf = analyser_rtf(x, fs)
    x250 = np.interp(np.arange(0, rec.seconds, 1 / 250.0), np.arange(len(x)) / fs, x)
    rtf250 = analyser_rtf(x250, 250.0)
    mem, sites = memory_per_patient(x250, 250.0, sites=args.memory_sites)
    print()
    print(f"{'measure':<52} {'value':>14}")
    print(f"{'EcgAnalyser realtime factor, ' + rec.name + f' at {fs:g} Hz':<52} {rtf:>13.0f}x")
    print(f"{'EcgAnalyser realtime factor, resampled to 250 Hz':<52} {rtf250:>13.0f}x")
    print(f"{'=> 250 Hz patches per core (analysis only)':<52} {rtf250:>14.0f}")
    print(f"{'memory per patient (tracemalloc, after 2 min)':<52} {mem / 1024:>11.1f} KiB")
    for where, size in sites:
        print(f"{'  of which ' + where:<52} {size / 1024:>11.1f} KiB")

    print()
    print(f"peers re-run each second on the last 10 s ({args.peer_seconds} s of {rec.name}), vs the analyser:")
    print(f"{'detector':<22} {'realtime':>10} {'Se %':>8} {'PPV %':>8}")
    n = int(round(fs))
    m = min(len(x), args.peer_seconds * n)
    # The analyser's pass is short (~0.2 s against a peer's several seconds), so one pass is at the
    # mercy of a scheduler hiccup on a shared machine: the median of three fresh passes.
    rates = []
    for _ in range(3):
        an = EcgAnalyser(fs)
        det: list[float] = []
        t = time.perf_counter()
        for k in range(0, m, n):
            an.push(x[k : k + n])
            det += [b[0] for b in an.drain_beats()]
        rates.append(m / fs / (time.perf_counter() - t))
    ours = float(np.median(rates))
    se, ppv = score_beats(rec, det, m / fs)
    print(f"{'vitalgate EcgAnalyser':<22} {ours:>9.0f}x {100 * (se or 0):>8.2f} {100 * (ppv or 0):>8.2f}")
    peers = peer_detectors(fs)
    for name, fn in peers.items():
        try:
            r, beats = sliding(fn, x, fs, args.peer_seconds)
            se, ppv = score_beats(rec, beats, m / fs)
            print(f"{name:<22} {r:>9.0f}x {100 * (se or 0):>8.2f} {100 * (ppv or 0):>8.2f}")
        except Exception as exc:  # a peer failing must not stop the bench
            print(f"{name:<22} failed: {exc}")
    if "neurokit2" not in peers:
        print(f"{'neurokit2':<22} not installed (pip install -e '.[bench]' to include it)")

    if not args.no_table:
        print()
        print("ecg-eval on the dev mitdb records:")
        results, seconds, spent = [], 0.0, 0.0
        for name in MITDB:
            r = evaluation.read_record(str(DATA / "mitdb" / name))
            beats, alarms, s = evaluation.analyse(r)
            seconds += r.seconds
            spent += s
            results.append(evaluation.score_record(r, beats, alarms))
        evaluation.print_table(results, evaluation.pooled(results), seconds / spent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
