"""AF screening speed: one 30-s strip classified, on one core, against a peer in the same run.

    python bench/ecg_screen.py [--strips 200] [--data ../shared/data/ecg/challenge2017]

Every strip of at least 30 s (in file order, up to ``--strips``) is cut to exactly
30 s and classified by ``stream.ecg.screening.screen`` (analyser, features, model);
the peer is wfdb's ``xqrs_detect`` finding the beats of the same 30 s, which is only
the first step of a screening.  The target (issue 20) is under 50 ms per strip so a
doctor never waits.  The accuracy figures come from ``scripts/train_screening_model.py``
(out-of-fold), not from here.  Machines are shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import doc_block  # noqa: E402

from stream.ecg import evaluation, screening  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "challenge2017"
STRIP_S = 30.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strips", type=int, default=200)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    args = ap.parse_args(argv)
    with doc_block.captured(args.doc, "ecg_screen", "python bench/ecg_screen.py"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    names = sorted(p.stem for p in args.data.glob("*.hea"))
    if not names:
        print(f"ecg_screen bench: no strips in {args.data} (pass --data)", file=sys.stderr)
        return 2
    strips: list[tuple[str, np.ndarray, float]] = []
    for name in names:
        r = evaluation.read_record(str(args.data / name))
        n = int(STRIP_S * r.fs)
        if len(r.signal_uv) >= n:
            strips.append((name, r.signal_uv[:n].copy(), r.fs))
        if len(strips) >= args.strips:
            break
    model = screening.load_model()
    screening.screen(strips[0][1], strips[0][2], model)  # warm caches and imports
    import wfdb.processing

    ours, peer = [], []
    for _, x, fs in strips:
        t0 = time.perf_counter()
        screening.screen(x, fs, model)
        ours.append(time.perf_counter() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            wfdb.processing.xqrs_detect(x / 1000.0, fs=fs, verbose=False)
            peer.append(time.perf_counter() - t0)
    ours_ms = sorted(1000 * v for v in ours)
    peer_ms = sorted(1000 * v for v in peer)
    p95 = ours_ms[int(0.95 * (len(ours_ms) - 1))]
    print(
        f"AF screening of a {STRIP_S:.0f}-s strip ({len(strips)} CinC 2017 strips at 300 Hz, one core, model "
        f"{screening.MODEL_NAME}):"
    )
    print(
        f"  vitalgate screen()       median {statistics.median(ours_ms):6.1f} ms  p95 {p95:6.1f} ms  "
        f"max {ours_ms[-1]:6.1f} ms   (target < 50 ms)"
    )
    print(f"  wfdb xqrs_detect (peer)  median {statistics.median(peer_ms):6.1f} ms  (beat detection only)")
    print(
        f"  ratio: a whole screening takes {statistics.median(ours_ms) / statistics.median(peer_ms):.2f}x "
        f"the peer's beat detection alone"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
