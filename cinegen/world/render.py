"""Deterministic renderer of the Shapes world: `ClipSpec` -> uint8 video (F, H, W, 3).

Dimension legend: F frames, H height, W width (pixels), S = min(H, W), n polygon vertices, k objects.

A clip is a `SceneTruth` (what a caption says: shapes, colours, sizes, motions, background, camera) plus a
layout (where each object starts) and a format (size, frames, fps). `layout_truth` places the objects with a
seeded generator so that their whole paths stay inside the frame and never touch each other (the analyzer
counts connected regions, and a small model learns cleaner scenes). `render_clip` draws every frame from
signed distance functions with analytic anti-aliasing (coverage = clamp(0.5 - sdf_px, 0, 1)), so edges are
smooth at any resolution and the output is a pure function of the spec: no randomness at render time.

Numpy only (no torch), float64 geometry, so renders are bit-identical across runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cinegen.world import vocab as V

__all__ = [
    "ObjectTruth",
    "SceneTruth",
    "ObjectSpec",
    "ClipSpec",
    "ShapeGeometry",
    "SHAPE_GEOMETRY",
    "object_tracks",
    "camera_transform",
    "layout_truth",
    "complete_truth",
    "sample_truth",
    "sample_spec",
    "render_clip_and_mask",
    "render_clip",
    "render_truth",
    "shape_label_map",
]


# ------------------------------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class ObjectTruth:
    """What a caption says about one object. `None` = not stated (only in parsed user prompts)."""

    shape: str
    color: str | None = None
    size: str | None = None
    motion: str | None = None
    speed: str | None = None  # None for "still"
    position: str | None = None  # start cell of the 3 x 3 grid (`vocab.POSITIONS`), stated in layout captions only
    token: tuple[int, int] | None = None  # start token (column, row; `vocab.TOKEN_PX` pixels), token captions only

    def __post_init__(self) -> None:
        if self.token is not None:  # JSON gives a list
            col, row = (int(v) for v in self.token)
            if not (0 <= col < V.MAX_TOKENS and 0 <= row < V.MAX_TOKENS):
                raise ValueError(f"token {tuple(self.token)} outside the 0..{V.MAX_TOKENS - 1} grid")
            object.__setattr__(self, "token", (col, row))
        _check(self.shape, V.SHAPES, "shape")
        _check(self.color, V.COLORS, "color", optional=True)
        _check(self.size, V.SIZES, "size", optional=True)
        _check(self.motion, V.MOTIONS, "motion", optional=True)
        _check(self.speed, V.SPEEDS, "speed", optional=True)
        _check(self.position, V.POSITIONS, "position", optional=True)
        if self.motion is not None and not V.motion_valid(self.shape, self.motion):
            raise ValueError(f"a {self.shape} cannot {self.motion} (its rotation would be invisible)")

    @property
    def held_out(self) -> bool:
        return None not in (self.motion, self.color) and V.is_held_out(self.color, self.shape, self.motion)


@dataclass(frozen=True)
class SceneTruth:
    """The caption-level description of a clip: objects, background colour/style and camera."""

    objects: tuple[ObjectTruth, ...]
    background: str | None = None
    background_style: str | None = None
    camera: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= V.MAX_OBJECTS:
            raise ValueError(f"a scene has 1..{V.MAX_OBJECTS} objects, got {len(self.objects)}")
        _check(self.background, V.BACKGROUND_COLORS, "background", optional=True)
        _check(self.background_style, V.BACKGROUND_STYLES, "background_style", optional=True)
        _check(self.camera, V.CAMERAS, "camera", optional=True)

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def held_out(self) -> bool:
        """True if any object is a held-out composition."""
        return any(o.held_out for o in self.objects)

    @property
    def complete(self) -> bool:
        """Every attribute stated (as in a dense caption or a rendered clip)."""
        objs_ok = all(
            None not in (o.color, o.size, o.motion) and (o.speed is not None) == V.has_speed(o.motion)
            for o in self.objects
        )
        return objs_ok and None not in (self.background, self.background_style, self.camera)

    def canonical(self) -> SceneTruth:
        """Order-free form for comparisons (objects sorted)."""
        key = lambda o: tuple(str(v) for v in dataclasses.astuple(o))  # noqa: E731
        return dataclasses.replace(self, objects=tuple(sorted(self.objects, key=key)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneTruth:
        objs = tuple(ObjectTruth(**o) for o in d["objects"])
        return cls(objs, d.get("background"), d.get("background_style"), d.get("camera"))


def _check(value: str | None, allowed: Any, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


# -------------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ObjectSpec:
    """One object of a clip: its truth plus where it starts (centre as fractions of width / height)."""

    shape: str
    color: str
    size: str
    motion: str
    speed: str | None
    x: float
    y: float
    angle: float = 0.0  # start orientation, degrees clockwise on screen (0: triangle/star point up)

    def truth(self) -> ObjectTruth:
        return ObjectTruth(self.shape, self.color, self.size, self.motion, self.speed)


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip; `render_clip(spec)` is a pure function of it."""

    objects: tuple[ObjectSpec, ...]
    background: str = "white"
    background_style: str = "solid"
    camera: str = "still"
    width: int = 96
    height: int = 96
    num_frames: int = 17
    fps: float = V.FPS
    bg_angle: float = 0.0  # gradient direction / stripe normal, degrees
    stripe_period: float = 0.25  # stripe period (one light + one dark band), in S

    def __post_init__(self) -> None:
        t = self.truth()  # validates names
        if not t.complete:
            raise ValueError("a ClipSpec needs every attribute (speed exactly when the object moves)")
        if self.width < 16 or self.height < 16 or self.num_frames < 1:
            raise ValueError(f"bad clip format {self.width}x{self.height}x{self.num_frames}")

    def truth(self, layout: bool = False, tokens: bool = False) -> SceneTruth:
        """The clip's caption-level truth; with `layout`, each object's start cell too (where it is on screen at
        the first frame, camera zoom included); with `tokens`, its cell and its start token (`vocab.token_of`)."""
        objs = tuple(o.truth() for o in self.objects)
        if layout or tokens:
            w, h = self.width, self.height
            tracks = object_tracks(self)
            objs = tuple(
                dataclasses.replace(
                    o,
                    position=V.position_cell(t.cx[0] / w, t.cy[0] / h),
                    token=V.token_of(t.cx[0], t.cy[0]) if tokens else None,
                )
                for o, t in zip(objs, tracks, strict=True)
            )
        return SceneTruth(objs, self.background, self.background_style, self.camera)

    @property
    def held_out(self) -> bool:
        return self.truth().held_out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        kw = dict(d)
        kw["objects"] = tuple(ObjectSpec(**o) for o in d["objects"])
        return cls(**kw)


# ----------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class ShapeGeometry:
    """A shape in units of its base radius r (circle radius): polygon vertices or an annulus."""

    vertices: np.ndarray | None = field(default=None, compare=False)  # (n, 2) x right, y down; None: round
    inner: float = 0.0  # ring hole radius (0: none)

    @property
    def bound(self) -> float:
        """Radius of the enclosing circle (in r), for layout."""
        return 1.0 if self.vertices is None else float(np.hypot(*self.vertices.T).max())

    @property
    def area(self) -> float:
        """Area in r^2 (the analyzer divides by it to read an object's size class from its pixel area)."""
        if self.vertices is None:
            return math.pi * (1.0 - self.inner**2)
        x, y = self.vertices.T
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _regular(n: int, radius: float, start_deg: float = -90.0) -> np.ndarray:
    a = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)  # (n, 2)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    a = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)  # (2*points, 2)


def _cross(arm: float, half: float) -> np.ndarray:
    a, h = arm, half
    pts = [
        (h, -a),
        (h, -h),
        (a, -h),
        (a, h),
        (h, h),
        (h, a),
        (-h, a),
        (-h, h),
        (-a, h),
        (-a, -h),
        (-h, -h),
        (-h, -a),
    ]
    return np.array(pts, dtype=np.float64)  # (12, 2)


# Proportions chosen so the shapes have similar visual weight (areas 2.2 .. 3.1 r^2) yet distinct outlines:
# a star's solidity (area / convex hull) is ~0.52, a cross's ~0.73, the convex shapes ~1; a ring's hole is
# 30 % of its disc.
SHAPE_GEOMETRY: dict[str, ShapeGeometry] = {
    "circle": ShapeGeometry(None),
    "ring": ShapeGeometry(None, inner=0.55),
    "square": ShapeGeometry(np.array([(-0.88, -0.88), (0.88, -0.88), (0.88, 0.88), (-0.88, 0.88)])),
    "triangle": ShapeGeometry(_regular(3, 1.3)),
    "star": ShapeGeometry(_star(5, 1.3, 0.55)),
    "cross": ShapeGeometry(_cross(1.1, 0.38)),
}


def polygon_sdf(qx: np.ndarray, qy: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (qx, qy) to a simple polygon (n, 2).

    Distance = min over edges of the point-segment distance; the sign flips at each edge crossing of a
    horizontal ray (crossing-number test), so it works for non-convex outlines (star, cross).
    """
    d2 = np.full(qx.shape, np.inf)
    inside = np.zeros(qx.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        ax, ay = verts[i]
        bx, by = verts[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = qx - ax, qy - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d2 = np.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = qy >= ay, qy < by, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


def shape_sdf(shape: str, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """SDF of a unit-radius shape at local coordinates (qx, qy), in units of r."""
    g = SHAPE_GEOMETRY[shape]
    if g.vertices is not None:
        return polygon_sdf(qx, qy, g.vertices)
    rho = np.hypot(qx, qy)
    if g.inner > 0:  # annulus: |rho - mid| - half-width
        return np.abs(rho - (1.0 + g.inner) / 2) - (1.0 - g.inner) / 2
    return rho - 1.0


# --------------------------------------------------------------------------------------------- kinematics
@dataclass(frozen=True)
class Track:
    """Screen-space state of one object at every frame (pixels, degrees)."""

    cx: np.ndarray  # (F,)
    cy: np.ndarray  # (F,)
    radius: np.ndarray  # (F,) base radius r in pixels (includes growth and zoom)
    angle: np.ndarray  # (F,) degrees clockwise


def _times(num_frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def camera_transform(camera: str, u: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (offset_x (F,), zoom (F,)): screen = centre + (world - centre - (offset, 0)) * zoom.

    A camera panning left moves its view window left, so the scene slides right on screen.
    """
    s = min(width, height)
    offset = np.zeros_like(u)
    zoom = np.ones_like(u)
    if camera == "pan_left":
        offset = -V.PAN_TRAVEL * s * u
    elif camera == "pan_right":
        offset = V.PAN_TRAVEL * s * u
    elif camera in V.ZOOM_RANGE:
        z0, z1 = V.ZOOM_RANGE[camera]
        zoom = z0 * (z1 / z0) ** u
    return offset, zoom


def world_path(
    obj: ObjectTruth, x0: float, y0: float, angle0: float, u: np.ndarray, s: float
) -> tuple[np.ndarray, ...]:
    """World-space (cx, cy, scale, angle) of an object over times u in [0, 1]; lengths in pixels."""
    cx = np.full_like(u, x0)
    cy = np.full_like(u, y0)
    scale = np.ones_like(u)
    angle = np.full_like(u, angle0)
    m, sp = obj.motion, obj.speed
    if m in V.DIRECTIONS:
        dx, dy = V.DIRECTIONS[m]
        cx = x0 + V.TRAVEL[sp] * s * dx * u
        cy = y0 + V.TRAVEL[sp] * s * dy * u
    elif m == "bounce":  # hops up from the floor y0 and lands back: |sin| arcs
        cy = y0 - V.BOUNCE_HEIGHT * s * np.abs(np.sin(math.pi * V.BOUNCES[sp] * u))
    elif m == "rotate":
        angle = angle0 + V.ROTATION_DEG[sp] * u
    elif m in ("grow", "shrink"):
        s0, s1 = V.GROWTH[sp]
        if m == "shrink":
            s0, s1 = s1, s0
        scale = s0 * (s1 / s0) ** u  # geometric: the same relative change per frame
    return cx, cy, scale, angle


def object_tracks(spec: ClipSpec) -> list[Track]:
    """Screen-space tracks of every object of a clip (the ground truth the analyzer is tested against)."""
    w, h = spec.width, spec.height
    s = min(w, h)
    u = _times(spec.num_frames)
    offset, zoom = camera_transform(spec.camera, u, w, h)
    tracks = []
    for o in spec.objects:
        cx, cy, scale, angle = world_path(o.truth(), o.x * w, o.y * h, o.angle, u, s)
        sx = w / 2 + (cx - w / 2 - offset) * zoom
        sy = h / 2 + (cy - h / 2) * zoom
        tracks.append(Track(sx, sy, V.SIZES[o.size] * s * scale * zoom, angle))
    return tracks


# ------------------------------------------------------------------------------------------------- layout
LAYOUT_MARGIN = 0.03  # min gap between an object's bounding circle and the frame edge, in S
LAYOUT_GAP = 0.06  # min gap between two objects' bounding circles, in S


def _fits(spec: ClipSpec) -> bool:
    s = min(spec.width, spec.height)
    tracks = object_tracks(spec)
    bounds = []
    for o, t in zip(spec.objects, tracks, strict=True):
        b = SHAPE_GEOMETRY[o.shape].bound * t.radius  # (F,)
        m = LAYOUT_MARGIN * s
        if (t.cx - b < m).any() or (t.cx + b > spec.width - m).any():
            return False
        if (t.cy - b < m).any() or (t.cy + b > spec.height - m).any():
            return False
        bounds.append(b)
    for i in range(len(tracks)):
        for j in range(i):
            d = np.hypot(tracks[i].cx - tracks[j].cx, tracks[i].cy - tracks[j].cy)
            if (d < bounds[i] + bounds[j] + LAYOUT_GAP * s).any():
                return False
    return True


def layout_truth(
    truth: SceneTruth,
    width: int,
    height: int,
    num_frames: int,
    rng: np.random.Generator,
    fps: float = V.FPS,
    tries: int = 200,
    snap: int | None = None,
) -> ClipSpec | None:
    """Place the objects of a complete truth so that every path stays in frame and no two objects touch.

    Start points are drawn uniformly from the range that keeps each object's own path inside the frame (and,
    for an object with a stated `position` / `token`, its start inside that grid cell / token on screen), then
    whole-clip checks (camera included) reject overlaps. With `snap`, each start is on screen at the first frame
    on a whole multiple of `snap` pixels (a token corner for `vocab.TOKEN_PX`: a token caption then says exactly
    where the object is). Returns None if no layout is found in `tries`.
    """
    if not truth.complete:
        raise ValueError("layout needs a complete truth; call complete_truth first")
    s = min(width, height)
    u = _times(max(num_frames, 2))
    zoom0 = float(camera_transform(truth.camera or "still", np.zeros(1), width, height)[1][0])  # screen scale, frame 0
    # Background parameters are drawn first so they do not depend on how many layout tries were needed.
    bg_angle = float(rng.choice([0.0, 45.0, 90.0, 135.0])) if truth.background_style != "solid" else 0.0
    period = float(rng.uniform(0.2, 0.35)) if truth.background_style == "stripes" else 0.25
    for _ in range(tries):
        objs = []
        for o in truth.objects:
            cx, cy, scale, _ = world_path(o, 0.0, 0.0, 0.0, u, s)
            b = SHAPE_GEOMETRY[o.shape].bound * V.SIZES[o.size] * s * scale.max() + LAYOUT_MARGIN * s
            lo_x, hi_x = b - cx.min(), width - b - cx.max()
            lo_y, hi_y = b - cy.min(), height - b - cy.max()
            if o.position is not None:  # the cell's bounds on screen at frame 0, mapped back to the world
                x0, x1, y0, y1 = V.cell_bounds(o.position)
                lo_x = max(lo_x, width / 2 + (x0 - 0.5) * width / zoom0)
                hi_x = min(hi_x, width / 2 + (x1 - 0.5) * width / zoom0 - 1e-6)
                lo_y = max(lo_y, height / 2 + (y0 - 0.5) * height / zoom0)
                hi_y = min(hi_y, height / 2 + (y1 - 0.5) * height / zoom0 - 1e-6)
            if o.token is not None:  # the token's pixels on screen at frame 0, mapped back the same way
                x0, x1, y0, y1 = V.token_bounds(o.token)
                lo_x = max(lo_x, width / 2 + (x0 - width / 2) / zoom0)
                hi_x = min(hi_x, width / 2 + (x1 - width / 2) / zoom0 - 1e-3)
                lo_y = max(lo_y, height / 2 + (y0 - height / 2) / zoom0)
                hi_y = min(hi_y, height / 2 + (y1 - height / 2) / zoom0 - 1e-3)
            if lo_x > hi_x or lo_y > hi_y:
                return None  # this object's path alone does not fit the frame
            x, y = _draw_start(lo_x, hi_x, width, zoom0, snap, rng), _draw_start(lo_y, hi_y, height, zoom0, snap, rng)
            if x is None or y is None:
                return None  # no snapped start in range
            x, y = x / width, y / height
            objs.append(ObjectSpec(o.shape, o.color, o.size, o.motion, o.speed, float(x), float(y), 0.0))
        spec = ClipSpec(
            tuple(objs),
            truth.background,
            truth.background_style,
            truth.camera,
            width,
            height,
            num_frames,
            fps,
            bg_angle,
            period,
        )
        if _fits(spec):
            return spec
    return None


def _draw_start(
    lo: float, hi: float, size: int, zoom0: float, snap: int | None, rng: np.random.Generator
) -> float | None:
    """A start coordinate in world pixels, uniform in [lo, hi]; with `snap`, uniform over those whose screen
    position at the first frame (zoom `zoom0` about the frame centre) is a whole multiple of `snap` (None if none)."""
    if snap is None:
        return float(rng.uniform(lo, hi))
    k_lo = math.ceil((size / 2 + (lo - size / 2) * zoom0) / snap - 1e-9)
    k_hi = math.floor((size / 2 + (hi - size / 2) * zoom0) / snap + 1e-9)
    if k_lo > k_hi:
        return None
    return size / 2 + (int(rng.integers(k_lo, k_hi + 1)) * snap - size / 2) / zoom0


def complete_truth(truth: SceneTruth, rng: np.random.Generator | None = None) -> SceneTruth:
    """Fill unstated attributes (from a short user prompt): random if `rng` is given, else plain defaults
    (red, still, slow, white solid background; large alone, small in company). An unstated camera is
    always still."""

    def pick(options: Sequence[str], default: str) -> str:
        return str(options[int(rng.integers(len(options)))]) if rng is not None else default

    objs = []
    for o in truth.objects:
        motion = o.motion or pick([m for m in V.MOTIONS if V.motion_valid(o.shape, m)], "still")
        speed = (o.speed or pick(V.SPEEDS, "slow")) if V.has_speed(motion) else None
        color = o.color or pick(list(V.COLORS), "red")
        size = o.size or pick(list(V.SIZES), "large" if len(truth.objects) == 1 else "small")
        objs.append(ObjectTruth(o.shape, color, size, motion, speed, o.position, o.token))
    return SceneTruth(
        tuple(objs),
        truth.background or pick(list(V.BACKGROUND_COLORS), "white"),
        truth.background_style or pick(V.BACKGROUND_STYLES, "solid"),
        truth.camera or "still",  # an unstated camera is a still one
    )


# ----------------------------------------------------------------------------------------------- sampling
def _sample_object(rng: np.random.Generator, exclude_held_out: bool) -> ObjectTruth:
    while True:
        shape = V.SHAPES[int(rng.integers(len(V.SHAPES)))]
        color = list(V.COLORS)[int(rng.integers(len(V.COLORS)))]
        motions = [m for m in V.MOTIONS if V.motion_valid(shape, m)]
        motion = motions[int(rng.integers(len(motions)))]
        size = list(V.SIZES)[int(rng.integers(len(V.SIZES)))]
        speed = V.SPEEDS[int(rng.integers(2))] if V.has_speed(motion) else None
        obj = ObjectTruth(shape, color, size, motion, speed)
        if not (exclude_held_out and obj.held_out):
            return obj


def _sample_count(rng: np.random.Generator, max_objects: int) -> int:
    p = np.array([0.45, 0.35, 0.2][:max_objects])
    return int(rng.choice(len(p), p=p / p.sum())) + 1


def sample_truth(
    rng: np.random.Generator,
    *,
    max_objects: int = V.MAX_OBJECTS,
    exclude_held_out: bool = True,
    group_prob: float = 0.35,
    camera_prob: float = 0.25,
    num_objects: int | None = None,
) -> SceneTruth:
    """A random complete truth. Object count 1/2/3 with probabilities ~ 0.45/0.35/0.2 (renormalised for
    `max_objects`) unless `num_objects` is given; a multi-object scene is a group of identical objects with
    `group_prob` (teaches counting: "three red stars"). Held-out compositions are never drawn when
    `exclude_held_out`."""
    n = num_objects if num_objects is not None else _sample_count(rng, max_objects)
    if n > 1 and rng.random() < group_prob:
        objs = (_sample_object(rng, exclude_held_out),) * n
    else:
        objs = tuple(_sample_object(rng, exclude_held_out) for _ in range(n))
    bg = list(V.BACKGROUND_COLORS)[int(rng.integers(len(V.BACKGROUND_COLORS)))]
    style = V.BACKGROUND_STYLES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    camera = "still" if rng.random() >= camera_prob else V.CAMERAS[1 + int(rng.integers(len(V.CAMERAS) - 1))]
    return SceneTruth(objs, bg, style, camera)


def sample_spec(
    rng: np.random.Generator,
    *,
    aspects: Sequence[str | tuple[int, int]] = tuple(V.ASPECTS),
    frame_counts: Sequence[int] = V.FRAME_COUNTS,
    fps: float = V.FPS,
    max_objects: int = V.MAX_OBJECTS,
    exclude_held_out: bool = True,
    group_prob: float = 0.35,
    camera_prob: float = 0.25,
    snap: int | None = None,
) -> ClipSpec:
    """A random, renderable clip (training data by default: held-out compositions excluded).

    `aspects` are names from `vocab.ASPECTS` or explicit (width, height) pairs. Scenes whose objects cannot
    be laid out without touching are redrawn, so the result is a deterministic function of the rng state.
    `snap`: starts on whole multiples of that many pixels on screen (`layout_truth`).
    """
    sizes = [V.ASPECTS[a] if isinstance(a, str) else (int(a[0]), int(a[1])) for a in aspects]
    while True:
        # Format and object count are drawn first and kept while scenes are redrawn until one fits, so
        # crowded (3-object) clips keep their share instead of being rejected away.
        w, h = sizes[int(rng.integers(len(sizes)))]
        f = int(frame_counts[int(rng.integers(len(frame_counts)))])
        n = _sample_count(rng, max_objects)
        for _ in range(100):
            truth = sample_truth(
                rng,
                exclude_held_out=exclude_held_out,
                group_prob=group_prob,
                camera_prob=camera_prob,
                num_objects=n,
            )
            spec = layout_truth(truth, w, h, f, rng, fps=fps, tries=30, snap=snap)
            if spec is not None:
                return spec


# -------------------------------------------------------------------------------------------------- render
def _shade(rgb: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Lighten (amount > 0, toward white) or darken (< 0, toward black) colours by a fraction."""
    amount = amount[..., None]
    return np.where(amount > 0, rgb + amount * (255.0 - rgb), rgb * (1.0 + amount))


def _background(spec: ClipSpec, px: np.ndarray, py: np.ndarray, offset: float, zoom: float) -> np.ndarray:
    """(H, W, 3) float background of one frame; patterns live in world space, so the camera moves them."""
    w, h = spec.width, spec.height
    s = min(w, h)
    base = np.array(V.BACKGROUND_COLORS[spec.background], dtype=np.float64)
    if spec.background_style == "solid":
        return np.broadcast_to(base, (h, w, 3)).copy()
    wx = w / 2 + (px - w / 2) / zoom + offset  # world coordinates of each pixel centre
    wy = h / 2 + (py - h / 2) / zoom
    a = math.radians(spec.bg_angle)
    proj = ((wx - w / 2) * math.cos(a) + (wy - h / 2) * math.sin(a)) / s  # (H, W) along the pattern normal
    if spec.background_style == "gradient":
        half = 0.5 * (abs(w * math.cos(a)) + abs(h * math.sin(a))) / s
        amount = V.GRADIENT_AMPLITUDE * np.clip(proj / half, -1.0, 1.0)
        return _shade(np.broadcast_to(base, (h, w, 3)), amount)
    # Stripes: bands of the base colour and a contrasting shade; anti-aliased by the pixel distance to the
    # nearest band edge. Light colours get darker stripes, dark colours lighter ones.
    f = np.mod(proj / spec.stripe_period, 1.0)
    d = np.where(f < 0.5, np.minimum(f, 0.5 - f), -np.minimum(f - 0.5, 1.0 - f))  # signed, in periods
    cover = np.clip(0.5 + d * spec.stripe_period * s * zoom, 0.0, 1.0)  # (H, W) 1 inside a stripe
    lum = float(V.rgb_to_lab(base)[0])
    stripe = _shade(base[None], np.array([-V.STRIPE_CONTRAST if lum > 50 else V.STRIPE_CONTRAST]))[0]
    return base + cover[..., None] * (stripe - base)


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Render a clip -> uint8 (F, H, W, 3). Pure and deterministic."""
    return render_clip_and_mask(spec)[0]


def render_clip_and_mask(spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Render a clip -> (uint8 frames (F, H, W, 3), uint8 object mask (F, H, W)): the mask is the objects'
    anti-aliased coverage (255 inside any object, 0 on the background), e.g. for a region-weighted loss."""
    w, h = spec.width, spec.height
    py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # (H, W) pixel centres
    u = _times(spec.num_frames)
    offset, zoom = camera_transform(spec.camera, u, w, h)
    tracks = object_tracks(spec)
    out = np.empty((spec.num_frames, h, w, 3), dtype=np.uint8)
    mask = np.zeros((spec.num_frames, h, w), dtype=np.float64)
    for f in range(spec.num_frames):
        img = _background(spec, px, py, float(offset[f]), float(zoom[f]))  # (H, W, 3)
        for o, t in zip(spec.objects, tracks, strict=True):
            r = float(t.radius[f])
            b = SHAPE_GEOMETRY[o.shape].bound * r + 2.0
            # Only the object's bounding box is evaluated (the rest has zero coverage).
            x0, x1 = max(int(t.cx[f] - b), 0), min(int(t.cx[f] + b) + 1, w)
            y0, y1 = max(int(t.cy[f] - b), 0), min(int(t.cy[f] + b) + 1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            qx, qy = _local_coords(t, f, px[y0:y1, x0:x1], py[y0:y1, x0:x1])
            cover = np.clip(0.5 - shape_sdf(o.shape, qx, qy) * r, 0.0, 1.0)  # (h', w')
            col = np.array(V.COLORS[o.color], dtype=np.float64)
            img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1.0 - cover[..., None]) + col * cover[..., None]
            np.maximum(mask[f, y0:y1, x0:x1], cover, out=mask[f, y0:y1, x0:x1])
        out[f] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out, np.rint(mask * 255).astype(np.uint8)


def _local_coords(t: Track, f: int, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object coordinates of screen points (px, py) at frame f: R(-angle) (p - c) / r, i.e. the clockwise (y-down)
    rotation undone, then unit radius (the frame `shape_sdf` reads)."""
    dx, dy = px - t.cx[f], py - t.cy[f]
    a = math.radians(float(t.angle[f]))
    r = float(t.radius[f])
    return (dx * math.cos(a) + dy * math.sin(a)) / r, (-dx * math.sin(a) + dy * math.cos(a)) / r


def shape_label_map(spec: ClipSpec, frame: int = 0, cell: int = 1) -> np.ndarray:
    """Which shape covers each `cell` x `cell` cell of a frame -> uint8 (H / cell, W / cell): 0 background,
    1 + the shape's index in `vocab.SHAPES` where the centre of the cell is inside an object (the topmost, as drawn).
    Ground truth for auxiliary training targets and segmentation tests."""
    if spec.width % cell or spec.height % cell:
        raise ValueError(f"cell {cell} does not divide {spec.width}x{spec.height}")
    py, px = np.mgrid[0 : spec.height : cell, 0 : spec.width : cell].astype(np.float64) + cell / 2  # cell centres
    out = np.zeros(px.shape, dtype=np.uint8)
    for o, t in zip(spec.objects, object_tracks(spec), strict=True):
        qx, qy = _local_coords(t, frame, px, py)
        out[shape_sdf(o.shape, qx, qy) < 0] = 1 + V.SHAPES.index(o.shape)
    return out


def render_truth(
    truth: SceneTruth, width: int, height: int, num_frames: int, seed: int, fps: float = V.FPS
) -> tuple[np.ndarray, ClipSpec]:
    """Lay out (seeded) and render a complete truth -> (frames (F, H, W, 3) uint8, spec).

    Raises ValueError if the objects cannot fit the frame (e.g. three large growing objects at 96 px).
    """
    rng = np.random.default_rng(seed)
    spec = layout_truth(complete_truth(truth), width, height, num_frames, rng, fps=fps)
    if spec is None:
        raise ValueError(f"cannot lay out {truth} in {width}x{height} without overlaps")
    return render_clip(spec), spec
