"""Chroma registration: the model-free sign of a picture read with a wrong height.

A YUV420 picture read with a height off by d rows keeps its luma, but the chroma planes start
in the wrong place: the U plane d full-width rows (2d chroma rows) early or late, the V plane
2.5d chroma rows. The colour slides up or down against the picture, U by 4d pixels and V by 5d,
and a band of luma bytes shows as false colour at one edge. The classifier sees the band when it
is wide; a wrong height of 8-30 rows mostly shows as colour fringes it misses (in development, 13
of 43 such frames reached its open score).

`measure` correlates the edges of the luma with the edges of each chroma plane at every vertical
shift (quarter resolution, FFT over the rows) and looks for the shift s of U for which U at s and
V at 1.25 s together line up with the luma better than at 0: the fingerprint of a wrong height. In
natural pictures colour edges sit on luma edges, at shift 0. `wrong_height` calls it when both
planes peak there on their own too and the joint score beats shift 0 by MIN_MARGIN (profiles in
standard deviations), or one plane does and the margin is ONE_PLANE_MARGIN (coded with P-frames,
a pale plane, U on grey footage, often loses its own peak while the joint one stays clear); and
the edges at that shift correlate at least MIN_COHERENCE (in faint, grainy colour the profiles'
peaks are noise).
Measured in models/MODEL.md; about 3 ms per 720p frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP = 4  # quarter resolution: a shift of s rows is a height error of s rows
MAX_SHIFT = 32  # wrong heights up to 32 rows; bigger ones the classifier sees (their false-colour band is wide)
V_SLOPE = 1.25  # V moves 1.25 times as far as U
MIN_SHIFT = 2
# On 6000 clean development frames (seeds 8000-8099) no frame had both planes agree with a margin
# of 2 or more, and none had one plane agree with a margin over 5.7 (pattern scenes); on
# development frames read 8-31 rows off, 26 of 43 reached 3 with both (coded all-intra), and
# with P-frames, as the evaluation codes them, 78 of 120 sampled frames, 86 with one plane at 6.
# With all three rules: 0 of 12000 clean development frames (seeds 8000-8199), those 86 of 120.
MIN_MARGIN = 3.0
ONE_PLANE_MARGIN = 6.0
# Colour too faint to register: a dark, grainy grey scene (seed 8126) passed the margins with its
# edges correlating 0.035; planted wrong heights that passed them correlated 0.10 or more.
MIN_COHERENCE = 0.08


@dataclass(frozen=True)
class ChromaShift:
    shift: int  # U's vertical shift against the luma, quarter-resolution rows (0: aligned)
    margin: float  # joint U+V alignment at `shift` minus at 0, in standard deviations of the profiles
    u_agrees: bool  # U alone aligns best at `shift` (within 1 row)
    v_agrees: bool  # V alone aligns best at 1.25 * `shift` (within 2 rows)
    coherence: float = 0.0  # correlation coefficient of luma and chroma edges there (the better plane)


def ycbcr(rgb: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 luma and colour differences (Cb, Cr; no offset) of every `step`-th pixel, float32."""
    q = rgb[::step, ::step].astype(np.float32)
    y = 0.299 * q[..., 0] + 0.587 * q[..., 1] + 0.114 * q[..., 2]
    return y, (q[..., 2] - y) * 0.564, (q[..., 0] - y) * 0.713


def _edges(plane: np.ndarray) -> np.ndarray:
    g = np.zeros_like(plane)
    g[1:-1, 1:-1] = np.abs(plane[2:, 1:-1] - plane[:-2, 1:-1]) + np.abs(plane[1:-1, 2:] - plane[1:-1, :-2])
    return g - g.mean(axis=0)


@dataclass(frozen=True)
class _LumaEdges:
    """The luma's edges, kept in the form both chroma planes are correlated against."""

    h: int
    w: int
    n: int  # FFT length over the rows (zero-padded, so shifts do not wrap)
    spectrum: np.ndarray  # conjugated rfft over the rows
    std: float

    @classmethod
    def of(cls, luma: np.ndarray) -> _LumaEdges:
        edges = _edges(luma)
        h, w = edges.shape
        n = 1 << int(np.ceil(np.log2(2 * h)))
        return cls(h, w, n, np.conj(np.fft.rfft(edges, n=n, axis=0)), float(edges.std()))


def _profile(luma: _LumaEdges, chroma: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of luma edges at row r with chroma edges at row r + s, s in [-span, span]:
    standardised over the shifts, and as a correlation coefficient."""
    chroma_edges = _edges(chroma)
    corr = np.fft.irfft((luma.spectrum * np.fft.rfft(chroma_edges, n=luma.n, axis=0)).sum(axis=1), n=luma.n)
    shifts = np.arange(-span, span + 1)
    p = corr[shifts % luma.n] / (luma.h - np.abs(shifts))  # per overlapping row
    coefficient = p / (luma.w * luma.std * chroma_edges.std() + 1e-6)
    return (p - np.median(p)) / (p.std() + 1e-6), coefficient


def measure(rgb: np.ndarray) -> ChromaShift:
    """RGB [H,W,3] uint8 -> how far the colour sits from where the luma says it should."""
    y, u, v = ycbcr(rgb, STEP)
    span_u = min(MAX_SHIFT, int(0.6 * y.shape[0] / V_SLOPE))  # V's shift must stay inside the picture
    span_v = int(np.ceil(V_SLOPE * span_u)) + 1
    if span_u < MIN_SHIFT or y.shape[1] < 8:
        return ChromaShift(0, 0.0, False, False)
    luma = _LumaEdges.of(y)
    (pu, cu), (pv, cv) = _profile(luma, u, span_u), _profile(luma, v, span_v)
    shifts = np.arange(-span_u, span_u + 1)
    joint = pu + pv[np.round(V_SLOPE * shifts).astype(int) + span_v]
    k = int(np.argmax(joint))
    s = int(shifts[k])
    sv = round(V_SLOPE * s) + span_v
    return ChromaShift(s, round(float(joint[k] - joint[span_u]), 2), abs(int(np.argmax(pu)) - span_u - s) <= 1,
                       abs(int(np.argmax(pv)) - sv) <= 2, round(float(max(cu[k], cv[sv])), 3))


def wrong_height(m: ChromaShift) -> bool:
    """The chroma planes slid as a wrong height slides them, clearly better aligned than unshifted."""
    if abs(m.shift) < MIN_SHIFT or m.coherence < MIN_COHERENCE:
        return False
    return (m.margin >= MIN_MARGIN and m.u_agrees and m.v_agrees) or (m.margin >= ONE_PLANE_MARGIN and (m.u_agrees or m.v_agrees))
