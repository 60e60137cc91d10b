"""Normal vs ventricular beat classification against a running template.

Each detected beat is cut from the raw signal (about 100 ms before to 120 ms
after the R peak), its local baseline removed (the line through the mean of
the first and last 10 ms), and compared with the patient's running template
of normal beats:

* correlation with the template (shape),
* effective QRS width = area / peak amplitude (µV·s / µV = s),
* amplitude ratio to the template,
* prematurity (RR before the beat over the recent mean RR).

A ventricular beat is wide and differently shaped; a supraventricular
premature beat keeps the normal shape, so prematurity alone never makes a
beat ventricular.  The template is learnt from the first beats (the most
typical of the narrow ones) and follows slow changes of normal morphology;
when a new morphology persists for many beats and is at least as narrow as
the template, the template is replaced (electrode moved, axis change).
"""

from __future__ import annotations

import numpy as np

PRE_S = 0.10
POST_S = 0.12
EDGE_S = 0.01
ALIGN_S = 0.03             # beats are re-aligned on the template within +-30 ms
LEARN_BEATS = 8
TEMPLATE_RATE = 0.05       # exponential template update for matching normal beats
CORR_MATCH = 0.85          # a beat at least this correlated is template-like
WIDTH_V = 1.30             # ... "wide": effective width this many times the template's
WIDTH_ABS_V_S = 0.100      # an effective width above this is ventricular whatever the template
CORR_SHAPE_V = 0.30        # a shape this different and not narrower than the template is ventricular
WIDER_S = 0.012            # ... and at least this much wider (s): tiny QRS widths are noisy
DOMINANT_BEATS = 32        # a morphology this frequent (4x the template's beats) ...
DOMINANT_MIN_RR_S = 0.6    # ... at a non-tachycardic rate becomes the normal template
NARROWER = 0.85            # an off-template morphology this much narrower may be the true normal one
RELEARN_BEATS = 8          # off-template, clearly narrower, self-similar beats that replace it


class BeatClassifier:
    """Labels beats "N" (normal or supraventricular) or "V" (ventricular ectopic)."""

    def __init__(self, fs: float) -> None:
        self.fs = float(fs)
        self.pre = max(3, int(round(PRE_S * fs)))
        self.post = max(3, int(round(POST_S * fs)))
        self.length = self.pre + self.post
        self.margin = max(1, int(round(ALIGN_S * fs)))
        e = max(1, int(round(EDGE_S * fs)))
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
        self.last_features: tuple[float, float] = (1.0, 0.0)
        self.last_match = False

    def window(self) -> tuple[int, int]:
        """Samples needed before and after the R peak (alignment margin included)."""
        return self.pre + self.margin, self.post + self.margin

    def _align(self, ext: np.ndarray) -> np.ndarray:
        """The window of ``ext`` best correlated with the template (shift within the margin)."""
        t = self._template
        if t is None:
            return ext[self.margin:self.margin + self.length]
        L = self.length
        tc = t - t.mean()
        num = np.correlate(ext, tc, "valid")
        c1 = np.concatenate(((0.0,), np.cumsum(ext)))
        c2 = np.concatenate(((0.0,), np.cumsum(ext * ext)))
        s1 = c1[L:] - c1[:-L]
        var = (c2[L:] - c2[:-L]) - s1 * s1 / L
        score = num / np.sqrt(np.maximum(var, 1e-9))
        k = int(np.argmax(score))
        return ext[k:k + L]

    def _prepare(self, seg: np.ndarray) -> tuple[np.ndarray, float]:
        e = self._edge
        a = float(seg[:e].mean())
        b = float(seg[-e:].mean())
        y = seg - (a + (b - a) * self._ramp)
        ay = np.abs(y)
        peak = float(ay.max())
        if peak <= 0.0:
            return y, 0.0
        width = float(ay.sum()) / peak / self.fs
        return y, width

    @staticmethod
    def _corr(a: np.ndarray, b: np.ndarray) -> float:
        a = a - a.mean()
        b = b - b.mean()
        den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
        return float(np.dot(a, b)) / den if den > 0 else 0.0

    def classify(self, ext: np.ndarray, rr_s: float | None = None) -> str:
        """Class of the beat whose raw samples (µV) around the R peak are ``ext`` (see ``window``)."""
        if len(ext) != self.length + 2 * self.margin:
            return "N"
        seg = self._align(ext)
        y, width = self._prepare(seg)
        if width == 0.0:
            return "N"
        if self._template is None:
            self.last_match = False
            self._learn.append((y, width))
            if len(self._learn) >= LEARN_BEATS:
                self._init_template()
            return "V" if width > WIDTH_ABS_V_S else "N"
        c = self._corr(y, self._template)
        rel_w = width / self._t_width if self._t_width > 0 else 1.0
        self.last_features = (c, rel_w)
        self.last_match = c >= CORR_MATCH
        if c >= CORR_MATCH and rel_w < WIDTH_V:
            self._template += TEMPLATE_RATE * (y - self._template)
            self._t_width += TEMPLATE_RATE * (width - self._t_width)
            self._tmpl_hits += 1
            self._dom_tmpl_hits += 1
            return "N"
        extra = width - self._t_width
        ventricular = (width > WIDTH_ABS_V_S
                       or (c < CORR_MATCH and rel_w >= WIDTH_V and extra >= WIDER_S)
                       or (c < CORR_SHAPE_V and extra >= 0.5 * WIDER_S))
        if c < CORR_MATCH and rr_s is not None:
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
                    return "N"
            else:
                self._alt, self._alt_width, self._alt_count = y.copy(), width, 1
                self._tmpl_hits = 0
        return "V" if ventricular else "N"

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
            if (self._dom_n >= DOMINANT_BEATS and self._dom_n >= 4 * self._dom_tmpl_hits
                    and self._dom_rr / self._dom_n >= DOMINANT_MIN_RR_S):
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
