"""Normal vs ventricular beat classification: a running normal template plus morphology clusters.

Each detected beat is cut from the raw signal (about 100 ms before to 120 ms
after the R peak), aligned on the normal template within ±30 ms by normalised
cross-correlation, and its local baseline removed (the line through the means
of the first and last 10 ms).  It is described by:

* ``corr``: correlation with the running template of normal beats (shape);
* ``width``: effective QRS width = area / peak amplitude (µV·s / µV = s), and
  its excess over the template's width, judged against the patient's own
  beat-to-beat spread of normal widths (a noisy record needs a larger excess);
* ``prematurity``: the RR before the beat over the median of recent
  normal-to-normal RRs;
* ``cluster``: which of a few running morphology clusters (templates of the
  recurring abnormal shapes, in the spirit of Hamilton's OSEA) the beat joins,
  and how that cluster's beats have been judged so far;
* ``context``: the class of the previous beat and the rate (a wide, fast run
  stays ventricular even when one of its beats is borderline on its own).

A ventricular beat is wide and/or differently shaped, and usually premature;
a supraventricular premature beat keeps the normal shape, so prematurity alone
never makes a beat ventricular.  The normal template is learnt from the first
beats (the narrowest recurring morphology) and follows slow changes of normal
morphology; a narrower morphology that becomes as frequent, or a morphology
that dominates at a non-tachycardic rate, replaces it (intermittent bundle
branch block, electrode moved).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from stream.ecg.beat_model import PROBE_MS, BeatModel

PRE_S = 0.10
POST_S = 0.12
EDGE_S = 0.01
ALIGN_S = 0.03  # beats are re-aligned on the template within +-30 ms
LEARN_BEATS = 8
TEMPLATE_RATE = 0.05  # exponential template update for matching normal beats
CORR_MATCH = 0.85  # a beat at least this correlated is template-like
WIDTH_ABS_V_S = 0.100  # an effective width above this (and wider than the template) is ventricular
WIDER_S = 0.012  # "wider": at least this much (s) above the template's width ...
WIDER_SPREAD = 3.0  # ... and this many times the normal beats' own width spread
WIDE_REL = 1.25  # ... and this many times the template's width
VERY_WIDE_REL = 2.0  # this much wider and differently shaped is ventricular on its own
CORR_SHAPE_V = 0.50  # a shape this different from the normal one ...
PREMATURE = 0.85  # RR below this share of the recent normal RR is premature
RUN_RR_S = 0.60  # > 100 bpm: a beat this fast after a V beat, off-template, continues the run
CLUSTER_MATCH = 0.90  # a beat joins a morphology cluster at this correlation
CLUSTERS = 6  # abnormal-morphology clusters kept
CLUSTER_MIN = 3  # beats a cluster needs before its majority label is used
DOMINANT_BEATS = 32  # a morphology this frequent (4x the template's beats) ...
DOMINANT_MIN_RR_S = 0.6  # ... at a non-tachycardic rate becomes the normal template
NARROWER = 0.85  # an off-template morphology this much narrower may be the true normal one
RELEARN_BEATS = 8  # off-template, clearly narrower, self-similar beats that replace it
SPREAD_RATE = 0.05  # EMA rate of the normal beats' width spread and shape mismatch
RECUR_RATE = 0.05  # EMA rate of the share of beats whose morphology recurs
RECUR_MIN = 0.5  # below this share the "beats" are mostly unrelated shapes (noise):
# morphology is not reliable enough for a ventricular-run judgement
LATE_S = 0.04  # energy after R + 40 ms: a wide complex carries it late
P_TEMPLATE = 0.2  # the normal template learns only from beats the model is sure are normal
TEMPLATE_MIN_RR_S = 0.6  # ... and only at a non-tachycardic rate (< 100/min): VT is never slower


class BeatClassifier:
    """Labels beats "N" (normal or supraventricular) or "V" (ventricular ectopic).

    With a ``model`` (:mod:`stream.ecg.beat_model`), the rules above compute the
    beat's features and their own verdict, and the learned model decides; the
    normal template then follows only beats the model is confident are normal,
    so a long run of ventricular complexes can never become the reference.
    """

    def __init__(self, fs: float, model: BeatModel | None = None) -> None:
        self.fs = float(fs)
        self.model = model
        self.last_x: np.ndarray | None = None  # the last beat's feature vector (see beat_model.FEATURES)
        self.last_p = 0.0  # and the model's P(ventricular)
        self.pre = max(3, int(round(PRE_S * fs)))
        self.post = max(3, int(round(POST_S * fs)))
        self.length = self.pre + self.post
        self._late = min(self.length - 1, self.pre + max(1, int(round(LATE_S * fs))))
        self._probe = np.clip(self.pre + np.round(np.array(PROBE_MS) * fs / 1000.0).astype(int), 0, self.length - 1)
        self.margin = max(1, int(round(ALIGN_S * fs)))
        # the baseline line goes through the means of >= 3 samples at each end: at 125 Hz, 10 ms
        # is one sample, and its noise made flutter-distorted normal beats look wide (mitdb 222)
        e = max(3, int(round(EDGE_S * fs)))
        self._edge = e
        self._ramp = np.linspace(0.0, 1.0, self.length)
        self._template: np.ndarray | None = None
        self._t_width = 0.0
        self._learn: list[tuple[np.ndarray, float]] = []
        self._alt: np.ndarray | None = None
        self._alt_count = 0
        self._alt_width = 0.0
        self._tmpl_hits = 0
        self._dom: np.ndarray | None = None
        self._dom_w = 0.0
        self._dom_n = 0
        self._dom_rr = 0.0
        self._dom_tmpl_hits = 0
        # spread of the normal beats' features (patient- and noise-adaptive)
        self._w_spread = 0.004
        self._mismatch = 0.03
        self._nn: deque[float] = deque(maxlen=8)  # recent RRs ending on normal beats
        self._rr_all: deque[float] = deque(maxlen=8)  # recent RRs of every beat (the local rate)
        self._prev_rr = 0.0
        # abnormal-morphology clusters: unit-norm centred templates, widths, counts, V votes
        self._cl = np.zeros((CLUSTERS, self.length))
        self._cl_n = np.zeros(CLUSTERS)
        self._cl_v = np.zeros(CLUSTERS)
        self._cl_used = np.zeros(CLUSTERS)
        self._clock = 0
        self._prev_v = False
        self._prev_cluster = -1
        self.last_features: tuple[float, float] = (1.0, 0.0)
        self.last_match = False
        self.last_run_only = False  # the last beat is V only because it continues a fast V run
        self.prev_corr = 0.0  # correlation of the last beat with the beat before it (organisation)
        self._prev_y: np.ndarray | None = None
        self.last_amp = 0.0  # the last beat's peak-to-peak amplitude (µV) and steepest slope (µV/sample)
        self.last_slope = 0.0
        self.recurrence = 1.0  # EMA share of beats matching the template or a recurring cluster

    @property
    def reliable(self) -> bool:
        """Whether recent beats have recurring morphologies (an ECG, not noise)."""
        return self.recurrence >= RECUR_MIN

    def window(self) -> tuple[int, int]:
        """Samples needed before and after the R peak (alignment margin included)."""
        return self.pre + self.margin, self.post + self.margin

    def _align(self, ext: np.ndarray) -> np.ndarray:
        """The window of ``ext`` best correlated with the template (shift within the margin)."""
        t = self._template
        if t is None:
            return ext[self.margin : self.margin + self.length]
        L = self.length
        tc = t - t.sum() / L
        num = np.correlate(ext, tc, "valid")
        c1 = np.concatenate(((0.0,), np.cumsum(ext)))
        c2 = np.concatenate(((0.0,), np.cumsum(ext * ext)))
        s1 = c1[L:] - c1[:-L]
        var = (c2[L:] - c2[:-L]) - s1 * s1 / L
        score = num / np.sqrt(np.maximum(var, 1e-9))
        k = int(np.argmax(score))
        return ext[k : k + L]

    def _prepare(self, seg: np.ndarray) -> tuple[np.ndarray, float]:
        e = self._edge
        a = float(seg[:e].sum()) / e
        b = float(seg[-e:].sum()) / e
        y = seg - (a + (b - a) * self._ramp)
        ay = np.abs(y)
        peak = float(ay.max())
        if peak <= 0.0:
            return y, 0.0
        width = float(ay.sum()) / peak / self.fs
        return y, width

    @staticmethod
    def _corr(a: np.ndarray, b: np.ndarray) -> float:
        a = a - a.sum() / a.size  # (= a.mean(), without its Python overhead)
        b = b - b.sum() / b.size
        den = math.sqrt(float(np.dot(a, a) * np.dot(b, b)))
        return float(np.dot(a, b)) / den if den > 0 else 0.0

    def _nn_median(self) -> float | None:
        if len(self._nn) < 4:
            return None
        s = sorted(self._nn)
        return s[len(s) // 2]

    def _features(
        self, y: np.ndarray, width: float, c: float, rr_s: float | None, nn: float | None, k: int, rule_v: bool
    ) -> np.ndarray:
        t = self._template
        assert t is not None
        t_amp = float(t.max() - t.min())
        y_max, y_min = float(y.max()), float(y.min())
        amp = y_max - y_min
        t_slope = float(np.abs(t[1:] - t[:-1]).max())
        ay = np.abs(y)
        tot = float(ay.sum())
        pol = (y_max + y_min) / amp if amp > 0 else 0.0
        t_pol = (float(t.max()) + float(t.min())) / t_amp if t_amp > 0 else 0.0
        on_cluster = k >= 0
        local = sum(self._rr_all) / len(self._rr_all) if self._rr_all else 0.0
        # the beat minus the template, in units of the template's amplitude, at a few fixed offsets
        diff = (y - t)[self._probe] / t_amp if t_amp > 0 else np.zeros(len(self._probe))
        t_area = float(np.abs(t).sum())
        return np.array(
            (
                *diff,
                tot / t_area if t_area > 0 else 1.0,
                1000.0 * (int(np.argmax(ay)) - self.pre) / self.fs,
                rr_s / local if (rr_s is not None and local > 0) else 1.0,
                self._prev_rr / local if local > 0 else 1.0,
                1000.0 * width,
                width / self._t_width if self._t_width > 0 else 1.0,
                1000.0 * (width - self._t_width),
                c,
                rr_s / nn if (rr_s is not None and nn) else 1.0,
                rr_s if rr_s is not None else 0.0,
                float(self._prev_v),
                self.prev_corr,
                amp / t_amp if t_amp > 0 else 1.0,
                self.last_slope / t_slope if t_slope > 0 else 1.0,
                float(ay[self._late :].sum()) / tot if tot > 0 else 0.0,
                pol,
                pol - t_pol,
                float(self._cl_v[k] / self._cl_n[k]) if on_cluster and self._cl_n[k] > 0 else -1.0,
                float(self._cl_n[k]) if on_cluster else 0.0,
                1000.0 * self._w_spread,
                self._mismatch,
                float(rule_v),
                60.0 / nn if nn else 0.0,
            )
        )

    def _decide(self, x: np.ndarray, rule_v: bool) -> bool:
        self.last_x = x
        if self.model is None:
            self.last_p = float(rule_v)
            return rule_v
        self.last_p = self.model.p_ventricular(x)
        return self.last_p >= self.model.threshold_v

    def classify(self, ext: np.ndarray, rr_s: float | None = None) -> str:
        """Class of the beat whose raw samples (µV) around the R peak are ``ext`` (see ``window``)."""
        self.last_run_only = False
        self.last_x = None
        if len(ext) != self.length + 2 * self.margin:
            return "N"
        seg = self._align(ext)
        y, width = self._prepare(seg)
        self.last_amp = float(y.max() - y.min())
        self.last_slope = float(np.abs(seg[1:] - seg[:-1]).max())
        prev, self._prev_y = self._prev_y, y
        self.prev_corr = self._corr(y, prev) if prev is not None else 0.0
        if width == 0.0:
            return "N"
        if self._template is None:
            self.last_match = False
            self._learn.append((y, width))
            if len(self._learn) >= LEARN_BEATS:
                self._init_template()
            cls = "V" if width > WIDTH_ABS_V_S else "N"
            self._after(cls, rr_s)
            return cls
        c = self._corr(y, self._template)
        rel_w = width / self._t_width if self._t_width > 0 else 1.0
        extra = width - self._t_width
        self.last_features = (c, rel_w)
        self.last_match = c >= CORR_MATCH
        nn = self._nn_median()
        premature = rr_s is not None and nn is not None and rr_s < PREMATURE * nn
        wider = extra >= max(WIDER_S, WIDER_SPREAD * self._w_spread) and rel_w >= WIDE_REL
        # shape mismatch judged against how well this patient's normal beats match (noise)
        shape_thr = max(1.0 - CORR_MATCH, 5.0 * self._mismatch)
        different = (1.0 - c) > shape_thr
        # a beat that follows a ventricular beat at > 100 bpm and is not a clean normal
        # beat (wider than the template or off its shape) continues the ventricular run
        run_on = (
            self._prev_v
            and rr_s is not None
            and rr_s < RUN_RR_S
            and (different or extra >= max(0.5 * WIDER_S, 2.0 * self._w_spread))
        )
        if c >= CORR_MATCH and not wider and not run_on:
            # the normal morphology (by the rules)
            x = self._features(y, width, c, rr_s, nn, -1, False)
            if self._decide(x, False):
                self.recurrence += RECUR_RATE * (1.0 - self.recurrence)
                self._after("V", rr_s)
                return "V"
            if self.model is not None and (
                self.last_p >= P_TEMPLATE or (rr_s is not None and rr_s < TEMPLATE_MIN_RR_S)
            ):
                # normal by the rules, not surely so by the model, or at a tachycardic rate (where a
                # ventricular run would be): the template does not learn from it
                self.recurrence += RECUR_RATE * (1.0 - self.recurrence)
                self._after("N", rr_s)
                return "N"
            self._template += TEMPLATE_RATE * (y - self._template)
            self._t_width += TEMPLATE_RATE * (width - self._t_width)
            self._w_spread += SPREAD_RATE * (abs(extra) - self._w_spread)
            self._mismatch += SPREAD_RATE * ((1.0 - c) - self._mismatch)
            self._tmpl_hits += 1
            self._dom_tmpl_hits += 1
            self.recurrence += RECUR_RATE * (1.0 - self.recurrence)
            self._after("N", rr_s)
            return "N"
        # single-beat evidence strong enough on its own
        strong = (width > WIDTH_ABS_V_S and extra >= WIDER_S) or (rel_w >= VERY_WIDE_REL and different)
        # weaker evidence (wider, or a very different shape) needs the rhythm to agree:
        # the beat is premature, continues a fast ventricular run, or its morphology
        # recurs in a cluster whose beats have mostly been judged ventricular
        abnormal = wider or (c < CORR_SHAPE_V and different)
        evidence = strong or (abnormal and premature)
        k = self._cluster(y, evidence)
        recurs = c >= CORR_MATCH or (k >= 0 and self._cl_n[k] >= 2)
        self.recurrence += RECUR_RATE * (float(recurs) - self.recurrence)
        recurring_v = k >= 0 and self._cl_n[k] >= CLUSTER_MIN and self._cl_v[k] * 2 > self._cl_n[k]
        shape_v = (abnormal or different) and recurring_v
        rule_v = evidence or run_on or shape_v
        ventricular = self._decide(self._features(y, width, c, rr_s, nn, k, rule_v), rule_v)
        # a template-shaped beat, not "wider", that is V only as the continuation of a run
        self.last_run_only = ventricular and run_on and c >= CORR_MATCH and not wider and not evidence and not shape_v
        if c < CORR_MATCH and rr_s is not None and not (self.model is not None and ventricular):
            # (a morphology the model calls ventricular never becomes the normal one)
            self._dominant(y, width, rr_s)
        if rel_w <= NARROWER and c < CORR_MATCH:
            # clearly narrower than the template: the template may be an ectopic morphology
            # learnt during bigeminy; enough self-similar narrow beats replace it
            if self._alt is not None and self._corr(y, self._alt) >= CORR_MATCH:
                self._alt_count += 1
                self._alt += 0.2 * (y - self._alt)
                self._alt_width += 0.2 * (width - self._alt_width)
                if self._alt_count >= RELEARN_BEATS and self._alt_count >= self._tmpl_hits:
                    self._template, self._t_width = self._alt, self._alt_width
                    self._alt, self._alt_count = None, 0
                    self._after("N", rr_s)
                    return "N"
            else:
                self._alt, self._alt_width, self._alt_count = y.copy(), width, 1
                self._tmpl_hits = 0
        cls = "V" if ventricular else "N"
        self._after(cls, rr_s)
        return cls

    def _after(self, cls: str, rr_s: float | None) -> None:
        if rr_s is not None and rr_s > 0:
            self._rr_all.append(rr_s)
        self._prev_rr = rr_s or 0.0
        if cls == "N" and rr_s is not None and rr_s > 0:
            self._nn.append(rr_s)
        self._prev_v = cls == "V"

    def _cluster(self, y: np.ndarray, vote_v: bool) -> int:
        """Put an off-template beat into its morphology cluster; returns the cluster index."""
        self._clock += 1
        yc = y - y.sum() / y.size
        nrm = math.sqrt(float(np.dot(yc, yc)))
        if nrm <= 0.0:
            return -1
        yc /= nrm
        cors = self._cl @ yc
        k = int(np.argmax(cors))
        if cors[k] >= CLUSTER_MATCH and self._cl_n[k] > 0:
            t = self._cl[k] + 0.1 * (yc - self._cl[k])
            self._cl[k] = t / max(float(np.sqrt(np.dot(t, t))), 1e-12)
            self._cl_n[k] += 1
            self._cl_v[k] += vote_v
            if self._cl_n[k] > 64:  # keep the label following recent behaviour
                self._cl_n[k] *= 0.5
                self._cl_v[k] *= 0.5
        else:
            k = int(np.argmin(self._cl_used))  # replace the least recently used cluster
            self._cl[k] = yc
            self._cl_n[k] = 1
            self._cl_v[k] = float(vote_v)
        self._cl_used[k] = self._clock
        return k

    def _dominant(self, y: np.ndarray, width: float, rr_s: float) -> None:
        """A morphology that has become the rhythm (not at a tachycardic rate) is the new normal.

        Handles a template learnt on the wrong beats (e.g. an intermittent bundle
        branch block) without ever absorbing a ventricular tachycardia.
        """
        if self._dom is not None and self._corr(y, self._dom) >= CORR_MATCH:
            self._dom_n += 1
            self._dom_rr += rr_s
            self._dom += 0.1 * (y - self._dom)
            self._dom_w += 0.1 * (width - self._dom_w)
            if (
                self._dom_n >= DOMINANT_BEATS
                and self._dom_n >= 4 * self._dom_tmpl_hits
                and self._dom_rr / self._dom_n >= DOMINANT_MIN_RR_S
            ):
                self._template, self._t_width = self._dom, self._dom_w
                self._dom, self._dom_n = None, 0
        else:
            self._dom, self._dom_w, self._dom_n, self._dom_rr = y.copy(), width, 1, rr_s
            self._dom_tmpl_hits = 0

    def _init_template(self) -> None:
        beats = self._learn
        k = len(beats)
        # the normal template: the narrowest morphology shared by at least 3 of the first beats
        # (during bigeminy the ectopic one can be as frequent as the normal one)
        best, best_key = 0, None
        for i in range(k):
            n_like = sum(1 for j in range(k) if j != i and self._corr(beats[i][0], beats[j][0]) >= CORR_MATCH)
            key = (n_like >= 2, -beats[i][1], n_like)
            if best_key is None or key > best_key:
                best, best_key = i, key
        members = [b for j, b in enumerate(beats) if j == best or self._corr(beats[best][0], b[0]) >= CORR_MATCH]
        self._template = np.mean([m[0] for m in members], axis=0)
        self._t_width = float(np.mean([m[1] for m in members]))
        self._learn = []

    def reset(self) -> None:
        """Forget the learning in progress (not the template): used after a gap."""
        self._learn = []
        self._prev_v = False
        self._prev_y = None
