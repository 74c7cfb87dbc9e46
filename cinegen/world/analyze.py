"""ShapesBench analyzer: read a video of the Shapes world back into colours, shapes, sizes, counts, motions,
background, temporal consistency and dynamics, and score it against the prompt's truth.

Dimension legend: F frames, H height, W width, S = min(H, W); k objects (tracks), n contour points.

Pipeline (numpy + OpenCV, no torch), built to survive a generated video's blur and noise:
1. Background colour = the median border pixel (CIELAB) over all frames, named by the nearest background
   colour. Objects never touch the border (render.LAYOUT_MARGIN), so the border is background.
2. Foreground = pixels farther than `FG_DISTANCE` CIELAB units from that colour (background shading stays
   within ~12 units, object colours are >= 45 away); a 3x3 median filter first removes speckle noise.
3. Connected components per frame (area >= `MIN_AREA` * S^2, not touching the frame edge, which world
   objects never do), linked across frames into tracks by nearest centroid; tracks present in at least
   half the frames are the objects (count = their number).
4. Per track: colour = nearest object colour to the median interior Lab; shape = an area-weighted vote of
   per-frame outline features (hole -> ring; a dent deeper than 0.15 r below the convex hull, or solidity
   < 0.87 -> star or cross by 5- vs 4-fold symmetry; otherwise circle / triangle / square by the 3rd and
   4th angular harmonics of the outline); size = the median equivalent radius against the shape's own
   area; motion = centroid trajectory (net displacement, bounce arcs), log-area trend and orientation
   change, with speed from their magnitudes.

Class splits (slow/fast, small/large) sit at the geometric mean of the two world values they separate
(vocab.py); "does it move / grow / turn" thresholds sit well below the slow value. tests/test_world_bench.py
checks the analyzer scores >= 98 % on every attribute on ground-truth renders of the whole bench suite.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from cinegen.world import vocab as V
from cinegen.world.render import SHAPE_GEOMETRY, SceneTruth

__all__ = [
    "ObjectAnalysis",
    "VideoAnalysis",
    "analyze_video",
    "score_video",
    "match_objects",
    "shape_features",
    "classify_shape",
    "ATTRIBUTES",
]

FG_DISTANCE = 22.0  # CIELAB units from the background colour that make a pixel foreground
MIN_AREA = 0.004  # smallest object component, as a fraction of S^2 (a shrunken small star is ~0.01)
TRACK_MIN_FRACTION = 0.5  # a track must be present in this fraction of frames to count as an object
LINK_DISTANCE = 0.3  # max centroid jump between frames when linking a track, in S

# Motion thresholds (geometric means between the world's classes, see vocab.py).
MOVE_MIN = 0.1  # net displacement (S) above which an object "moves"; slow travel is 0.25
BOUNCE_MIN = 0.1  # vertical excursion beyond the straight-line fit (S) for a bounce; hop height is 0.3
SCALE_MIN = 0.4  # |log area ratio| for grow/shrink; slow growth is log(1.5625^2) = 0.89
ROTATE_MIN = 30.0  # degrees of total rotation; slow rotation is 90
TRAVEL_SPLIT = math.sqrt(V.TRAVEL["slow"] * V.TRAVEL["fast"])
ROTATE_SPLIT = math.sqrt(V.ROTATION_DEG["slow"] * V.ROTATION_DEG["fast"])
GROWTH_SPLIT = math.sqrt(
    math.log((V.GROWTH["slow"][1] / V.GROWTH["slow"][0]) ** 2)
    * math.log((V.GROWTH["fast"][1] / V.GROWTH["fast"][0]) ** 2)
)
SIZE_SPLIT = math.sqrt(V.SIZES["small"] * V.SIZES["large"])
POSITION_TOL = 0.03  # how far (fraction of the width / height) a start centroid may lie outside its stated cell
DYNAMIC_MIN = 0.003  # fraction of pixels that must change (vs frame 0) for a video to count as dynamic

ATTRIBUTES = (
    "color",
    "shape",
    "size",
    "count",
    "motion",
    "speed",
    "background",
    "consistency",
    "dynamic",
    "position",  # scored only where the prompt states a start cell (layout captions)
    "token",  # scored only where the prompt states a start token (token captions)
)

_OBJ_NAMES, _OBJ_LAB = V.palette_lab(V.COLORS)
_BG_NAMES, _BG_LAB = V.palette_lab(V.BACKGROUND_COLORS)


# --------------------------------------------------------------------------------------------- results
@dataclass
class ObjectAnalysis:
    """One tracked object."""

    color: str
    shape: str
    size: str
    motion: str
    speed: str | None
    frames: int  # frames the object was seen in
    area: float  # mean area, as a fraction of S^2
    lab: list[float]  # median interior colour
    displacement: list[float]  # net (dx, dy) over the clip, in S
    log_area_change: float
    rotation_deg: float
    bounces: int
    area_jitter: float  # std of log area around its linear trend (0 = perfectly stable)
    color_jitter: float  # median per-frame CIELAB distance from the object's median colour
    shape_votes: dict[str, float] = field(default_factory=dict)
    position: str = "center"  # grid cell (`vocab.POSITIONS`) of the centroid where the object is first seen
    start: list[float] = field(default_factory=lambda: [0.5, 0.5])  # that centroid (x / W, y / H)
    start_px: list[float] = field(default_factory=lambda: [0.0, 0.0])  # that centroid in pixels (x, y)


@dataclass
class VideoAnalysis:
    background: str
    background_lab: list[float]
    count: int
    objects: list[ObjectAnalysis]
    count_stability: float  # fraction of frames whose component count equals `count`
    dynamic_degree: float  # max over frames of the fraction of pixels whose fg/bg label changed vs frame 0
    dynamic: bool
    consistent: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ segmentation
def _nearest(lab: np.ndarray, names: list[str], table: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - lab, axis=-1)))]


def _background_lab(lab: np.ndarray) -> np.ndarray:
    """Median colour of a 2-pixel border over all frames: (F, H, W, 3) -> (3,)."""
    border = np.concatenate(
        [
            lab[:, :2].reshape(-1, 3),  # top rows (F*2*W, 3)
            lab[:, -2:].reshape(-1, 3),  # bottom rows (F*2*W, 3)
            lab[:, :, :2].reshape(-1, 3),  # left columns (F*H*2, 3)
            lab[:, :, -2:].reshape(-1, 3),  # right columns (F*H*2, 3)
        ]
    )
    return np.median(border, axis=0)


@dataclass
class _Component:
    frame: int
    area: float
    cx: float
    cy: float
    mask: np.ndarray  # bool (h', w') crop
    x0: int
    y0: int
    lab: np.ndarray  # (3,) median interior colour


def _components(lab: np.ndarray, fg: np.ndarray, f: int, min_area: float) -> list[_Component]:
    n, labels, stats, cents = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    out = []
    height, width = fg.shape
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        # World objects never touch the frame edge (render.LAYOUT_MARGIN): a region that does is background
        # texture or noise leaking through the threshold, not an object.
        if area < min_area or x == 0 or y == 0 or x + w == width or y + h == height:
            continue
        mask = labels[y : y + h, x : x + w] == i
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        pix = lab[y : y + h, x : x + w][inner if inner.sum() >= 4 else mask]
        out.append(_Component(f, float(area), float(cents[i][0]), float(cents[i][1]), mask, x, y, np.median(pix, 0)))
    return out


def _link(per_frame: list[list[_Component]], s: float) -> list[list[_Component]]:
    """Greedy nearest-centroid linking of components into tracks (objects never overlap in this world)."""
    tracks: list[list[_Component]] = []
    for comps in per_frame:
        pairs = []
        for ti, tr in enumerate(tracks):
            last = tr[-1]
            for ci, c in enumerate(comps):
                d = math.hypot(c.cx - last.cx, c.cy - last.cy)
                if d <= LINK_DISTANCE * s:
                    pairs.append((d, ti, ci))
        used_t, used_c = set(), set()
        for _, ti, ci in sorted(pairs):
            if ti in used_t or ci in used_c:
                continue
            tracks[ti].append(comps[ci])
            used_t.add(ti)
            used_c.add(ci)
        tracks.extend([c] for ci, c in enumerate(comps) if ci not in used_c)
    return tracks


# ------------------------------------------------------------------------------------------------ shapes
def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Outline features of one object mask (bool (h, w)):

    hole: hole area / filled area; solidity: filled area / convex hull area; h3, h4, h5: magnitude of the
    k-th angular harmonic of the outline radius r(theta) relative to its mean (0 for a circle); phase3..5:
    the harmonic's phase (orientation * k); area: filled area in pixels.
    """
    m = np.pad(mask.astype(np.uint8), 2)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return {"hole": 0.0, "solidity": 1.0, "concavity": 0.0, "h3": 0.0, "h4": 0.0, "h5": 0.0, "area": 0.0}
    outer_i = max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]) if hierarchy[0][i][3] < 0 else -1)
    outer = contours[outer_i]
    filled = np.zeros_like(m)
    cv2.drawContours(filled, [outer], -1, 1, thickness=-1)
    filled_area = float(filled.sum())
    hole = max(filled_area - float(m.sum()), 0.0) / max(filled_area, 1.0)
    hull_area = cv2.contourArea(cv2.convexHull(outer)) + 0.5 * cv2.arcLength(cv2.convexHull(outer), True)
    # Pixel-count area vs hull polygon through pixel centres: add half a pixel of perimeter to the hull so
    # convex shapes come out at ~1 whatever their size.
    solidity = filled_area / max(hull_area, 1.0)
    # Deepest dent of the outline below its convex hull, relative to the equivalent radius: survives blur
    # better than solidity (a blurred cross keeps ~0.3, convex shapes stay < ~0.1).
    concavity = 0.0
    hull_idx = cv2.convexHull(outer, returnPoints=False)
    if len(outer) > 3 and hull_idx is not None and len(hull_idx) > 3:
        try:
            defects = cv2.convexityDefects(outer, hull_idx)
        except cv2.error:  # self-intersecting pixel outlines can make OpenCV refuse; treat as convex
            defects = None
        if defects is not None and defects.size:  # OpenCV may return an empty array for a convex outline
            # defects: (d, 1, 4) or (d, 4) rows (start, end, farthest point, depth * 256)
            concavity = float(defects.reshape(-1, 4)[:, 3].max()) / 256.0 / math.sqrt(max(filled_area, 1.0) / math.pi)
    ys, xs = np.nonzero(filled)
    cx, cy = xs.mean(), ys.mean()
    pts = outer[:, 0, :].astype(np.float64)  # (n, 2)
    dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    # Weight each outline point by its arc length so the sampling density of the contour does not matter.
    seg = np.hypot(*(np.roll(pts, -1, 0) - pts).T) / 2 + np.hypot(*(pts - np.roll(pts, 1, 0)).T) / 2
    wsum = float((seg * r).sum())
    out = {"hole": hole, "solidity": solidity, "concavity": concavity, "area": filled_area}
    for k in (3, 4, 5):
        z = (seg * r * np.exp(1j * k * theta)).sum() / max(wsum, 1e-9)
        out[f"h{k}"] = float(abs(z))
        out[f"phase{k}"] = float(np.angle(z))
    return out


def classify_shape(feat: dict[str, float]) -> str:
    """Decision list on outline features (thresholds halfway between the world's shapes)."""
    if feat["hole"] > 0.04:
        return "ring"
    if feat["concavity"] > 0.15 or feat["solidity"] < 0.87:
        return "star" if feat["h5"] > feat["h4"] else "cross"
    if max(feat["h3"], feat["h4"]) < 0.07:
        return "circle"
    return "triangle" if feat["h3"] > feat["h4"] else "square"


# Filled-outline area of each shape in units of r^2 (a ring's outline encloses its hole).
_FILLED_AREA = {k: (math.pi if g.inner > 0 else g.area) for k, g in SHAPE_GEOMETRY.items()}
_DIRECTION_ANGLES = {m: math.atan2(dy, dx) for m, (dx, dy) in V.DIRECTIONS.items()}


def _fit(u: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares line y ~ a + b u -> (b = change over the clip, residuals)."""
    if len(u) < 2 or np.ptp(u) == 0:
        return 0.0, np.zeros_like(y)
    b, a = np.polyfit(u, y, 1)
    return float(b), y - (a + b * u)


def _count_bounces(height: np.ndarray) -> int:
    """Hops in a height profile: upward crossings of 60 % of its range after being below 30 %."""
    lo, amp = float(height.min()), float(np.ptp(height))
    if amp <= 0:
        return 0
    n, low = 0, True
    for h in height:
        if low and h > lo + 0.6 * amp:
            n, low = n + 1, False
        elif not low and h < lo + 0.3 * amp:
            low = True
    return n


def _rotation(phases: np.ndarray, k: int) -> float:
    """Total orientation change (degrees, + = clockwise on screen) from per-frame k-th harmonic phases.

    A shape turned clockwise by a has r(theta - a), whose k-th harmonic phase grows by k a; frame-to-frame
    steps are unwrapped into (-pi, pi], which is safe while a shape turns less than 180/k degrees per frame.
    """
    if k == 0 or len(phases) < 2:
        return 0.0
    d = np.angle(np.exp(1j * np.diff(phases)))
    return float(np.degrees(d.sum() / k))


def _analyze_track(track: list[Any], num_frames: int, width: int, height: int) -> ObjectAnalysis:
    s = float(min(width, height))
    u = np.array([c.frame for c in track], dtype=np.float64) / max(num_frames - 1, 1)
    feats = [shape_features(c.mask) for c in track]
    # Shape: vote weighted by area (big frames are the most legible: a shrunken object's last frames count
    # least).
    votes: dict[str, float] = {}
    for f in feats:
        votes[classify_shape(f)] = votes.get(classify_shape(f), 0.0) + f["area"]
    shape = max(votes, key=lambda k: votes[k])
    total = sum(votes.values()) or 1.0
    labs = np.stack([c.lab for c in track])  # (F', 3)
    lab = np.median(labs, axis=0)
    color = _nearest(lab, _OBJ_NAMES, _OBJ_LAB)
    filled = np.array([f["area"] for f in feats])
    r_eq = float(np.median(np.sqrt(filled / _FILLED_AREA[shape]))) / s
    size = "small" if r_eq < SIZE_SPLIT else "large"

    cx = np.array([c.cx for c in track]) / s
    cy = np.array([c.cy for c in track]) / s
    dx, _ = _fit(u, cx)
    dy, res_y = _fit(u, cy)
    log_area = np.log(np.maximum(np.array([c.area for c in track]), 1.0))
    dlog, res_a = _fit(u, log_area)
    k = V.SYMMETRY[shape]
    rotation = _rotation(np.array([f.get(f"phase{k}", 0.0) for f in feats]), k) if k else 0.0
    bounces = _count_bounces(-cy) if np.ptp(res_y) > BOUNCE_MIN else 0

    travel = math.hypot(dx, dy)
    if bounces >= 1:
        motion, speed = "bounce", ("fast" if bounces >= 2 else "slow")
    elif travel > MOVE_MIN:
        ang = math.atan2(dy, dx)
        motion = min(_DIRECTION_ANGLES, key=lambda m: abs(math.remainder(ang - _DIRECTION_ANGLES[m], math.tau)))
        speed = "fast" if travel > TRAVEL_SPLIT else "slow"
    elif abs(dlog) > SCALE_MIN:
        motion = "grow" if dlog > 0 else "shrink"
        speed = "fast" if abs(dlog) > GROWTH_SPLIT else "slow"
    elif abs(rotation) > ROTATE_MIN:
        motion, speed = "rotate", ("fast" if abs(rotation) > ROTATE_SPLIT else "slow")
    else:
        motion, speed = "still", None

    color_jitter = float(np.median(np.linalg.norm(labs - lab, axis=-1)))
    return ObjectAnalysis(
        color=color,
        shape=shape,
        size=size,
        motion=motion,
        speed=speed,
        frames=len(track),
        area=round(float(np.mean([c.area for c in track])) / (s * s), 5),
        lab=[round(float(v), 2) for v in lab],
        displacement=[round(dx, 4), round(dy, 4)],
        log_area_change=round(dlog, 4),
        rotation_deg=round(rotation, 2),
        bounces=bounces,
        area_jitter=round(float(res_a.std()), 4),
        color_jitter=round(color_jitter, 3),
        shape_votes={k: round(v / total, 3) for k, v in votes.items()},
        position=V.position_cell(track[0].cx / width, track[0].cy / height),
        start=[round(track[0].cx / width, 4), round(track[0].cy / height, 4)],
        start_px=[round(float(track[0].cx), 2), round(float(track[0].cy), 2)],
    )


def analyze_video(frames: np.ndarray) -> VideoAnalysis:
    """Analyze a Shapes-world video (uint8 (F, H, W, 3)) without knowing its prompt."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (F, H, W, 3), got {frames.shape}")
    f_count, h, w, _ = frames.shape
    s = float(min(h, w))
    # A 3x3 median removes isolated noise pixels of generated videos; flat renders pass unchanged except
    # at anti-aliased edges.
    smooth = np.stack([cv2.medianBlur(np.ascontiguousarray(fr, dtype=np.uint8), 3) for fr in frames])  # (F, H, W, 3)
    lab = V.rgb_to_lab(smooth)  # (F, H, W, 3)
    bg_lab = _background_lab(lab)
    background = _nearest(bg_lab, _BG_NAMES, _BG_LAB)
    fg = np.linalg.norm(lab - bg_lab, axis=-1) > FG_DISTANCE  # (F, H, W)
    per_frame = [_components(lab[f], fg[f], f, MIN_AREA * s * s) for f in range(f_count)]
    tracks = [t for t in _link(per_frame, s) if len(t) >= TRACK_MIN_FRACTION * f_count]
    objects = [_analyze_track(t, f_count, w, h) for t in tracks]
    count = len(objects)
    stability = float(np.mean([len(c) == count for c in per_frame]))
    # Dynamic degree from the foreground masks (robust to pixel noise, unlike raw frame differences): the
    # largest fraction of the frame whose foreground/background label differs from frame 0. Differences are
    # opened with a 3x3 kernel, which keeps the coherent crescents a moving object leaves and drops the
    # scattered flips of noise.
    kernel = np.ones((3, 3), np.uint8)
    clean = np.stack([cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel) for m in fg])  # (F, H, W)
    diff = [cv2.morphologyEx((c != clean[0]).astype(np.uint8), cv2.MORPH_OPEN, kernel) for c in clean]
    degree = float(max(d.mean() for d in diff))
    consistent = stability >= 0.9 and count > 0 and all(o.area_jitter < 0.15 and o.color_jitter < 8.0 for o in objects)
    return VideoAnalysis(
        background=background,
        background_lab=[round(float(v), 2) for v in bg_lab],
        count=count,
        objects=objects,
        count_stability=round(stability, 4),
        dynamic_degree=round(degree, 5),
        dynamic=degree > DYNAMIC_MIN,
        consistent=bool(consistent),
    )


# ---------------------------------------------------------------------------------------------- scoring
_OBJECT_ATTRS = ("color", "shape", "size", "motion", "speed", "position", "token")


def _matches(attr: str, want: Any, det: ObjectAnalysis) -> bool:
    """Does a detected object have the stated value? A stated start cell counts as met within POSITION_TOL of
    it (a centroid a pixel across a grid line is still "in the top left"); a stated start token within half a
    token of it (a snapped start sits on the token's top-left corner)."""
    if attr == "token":
        x0, x1, y0, y1 = V.token_bounds(want)
        x, y, tol = *det.start_px, V.TOKEN_PX / 2
        return x0 - tol <= x <= x1 + tol and y0 - tol <= y <= y1 + tol
    if attr != "position":
        return getattr(det, attr) == want
    x0, x1, y0, y1 = V.cell_bounds(want)
    x, y = det.start
    return x0 - POSITION_TOL <= x <= x1 + POSITION_TOL and y0 - POSITION_TOL <= y <= y1 + POSITION_TOL


def _agreement(truth_obj: Any, det: ObjectAnalysis) -> int:
    return sum(getattr(truth_obj, a) is not None and _matches(a, getattr(truth_obj, a), det) for a in _OBJECT_ATTRS)


def match_objects(analysis: VideoAnalysis, truth: SceneTruth) -> list[ObjectAnalysis | None]:
    """For each truth object, its detected object (None if unmatched).

    Only the len(truth) most salient detections (longest-lived, then largest) are candidates, so a video
    full of spurious blobs cannot have its best-looking blob cherry-picked; among those, the one-to-one
    assignment maximising attribute agreement is used (deterministic tie-break).
    """
    tr = list(truth.objects)
    dets = sorted(analysis.objects, key=lambda o: (-o.frames, -o.area))[: len(tr)]
    best: tuple[int, tuple[int, ...]] = (-1, ())
    for perm in itertools.permutations(range(len(tr))):  # truth index order; at most 3! = 6
        assign = tuple(perm[k] for k in range(len(dets)))  # detection k -> truth perm[k]
        score = sum(_agreement(tr[t], dets[k]) for k, t in enumerate(assign))
        if score > best[0]:
            best = (score, assign)
    out: list[ObjectAnalysis | None] = [None] * len(tr)
    for k, t in enumerate(best[1]):
        out[t] = dets[k]
    return out


def score_video(analysis: VideoAnalysis, truth: SceneTruth) -> dict[str, float | None]:
    """Per-attribute scores in [0, 1] of one analyzed video against its truth (None = not applicable).

    Detected objects are matched one-to-one to truth objects (`match_objects`); an unmatched truth object
    (too few detections) scores 0 on every object attribute. Speed is scored on moving objects only;
    attributes the truth leaves unstated (None) are skipped.
    """
    tr = list(truth.objects)
    matched = match_objects(analysis, truth)
    out: dict[str, float | None] = {}
    for a in _OBJECT_ATTRS:
        vals = []
        for t, d in zip(tr, matched, strict=True):
            want = getattr(t, a)
            if want is None or (a == "speed" and not V.has_speed(t.motion or "still")):
                continue
            vals.append(float(d is not None and _matches(a, want, d)))
        out[a] = float(np.mean(vals)) if vals else None
    out["count"] = float(analysis.count == truth.count)
    out["background"] = float(analysis.background == truth.background) if truth.background else None
    out["consistency"] = float(analysis.consistent)
    # Should the video move? Yes if anything stated moves; no if everything is stated still; else unknown.
    if any(o.motion not in (None, "still") for o in tr) or truth.camera not in (None, "still"):
        out["dynamic"] = float(analysis.dynamic)
    elif all(o.motion == "still" for o in tr):
        out["dynamic"] = float(not analysis.dynamic)
    else:
        out["dynamic"] = None
    return out
