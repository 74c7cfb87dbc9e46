"""The Shapes world's vocabulary: colours, shapes, sizes, motions, speeds, backgrounds, cameras, clip formats,
and the fixed list of held-out compositions.

Everything the renderer draws, the captioner says and the analyzer checks is named here once, with the
numbers that define it (RGB values, size fractions, travel distances). The analyzer derives its decision
thresholds from these same numbers (the geometric mean between two classes), so changing the world here keeps
the bench consistent.

Lengths are fractions of S = min(H, W), the short side of the frame, so the same clip spec renders the same
scene at any resolution. Time u runs from 0 (first frame) to 1 (last frame): a motion covers the same
distance whatever the clip length, so objects never leave the frame in long clips (a 33-frame clip moves
more gently per frame than a 9-frame one; "slow"/"fast" compare clips of equal length).
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------- colours
# Saturated object colours, at least ~44 CIELAB units apart from each other and ~45 from every background
# colour (tests/test_world_vocab.py checks both), so a blurred or noisy generated object still lands nearest
# its own name.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (245, 215, 20),
    "green": (20, 170, 40),
    "cyan": (0, 200, 220),
    "blue": (20, 80, 240),
    "purple": (120, 20, 140),
    "pink": (250, 110, 190),
}

# Background colours are neutral or muted and disjoint from the object palette, so every colour word in a
# caption says unambiguously whether it names an object or the background.
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "beige": (225, 205, 165),
    "navy": (20, 30, 80),
}

COLOR_SYNONYMS: dict[str, str] = {"violet": "purple", "magenta": "pink", "turquoise": "cyan", "aqua": "cyan"}
BACKGROUND_SYNONYMS: dict[str, str] = {"grey": "gray", "cream": "beige", "dark-blue": "navy"}

# --------------------------------------------------------------------------------------------------- shapes
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")

# Rotational symmetry order (k-fold) of each shape; 0 = continuous (a rotation is invisible). The analyzer
# reads orientation from the k-th angular harmonic of the outline.
SYMMETRY: dict[str, int] = {"circle": 0, "ring": 0, "square": 4, "cross": 4, "triangle": 3, "star": 5}

SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "ring": "rings",
    "cross": "crosses",
}
# Words a user (or a varied caption) may use for each shape; the parser maps them back. Singular and plural.
SHAPE_SYNONYMS: dict[str, str] = {
    "disc": "circle",
    "discs": "circle",
    "disk": "circle",
    "disks": "circle",
    "dot": "circle",
    "dots": "circle",
    "ball": "circle",
    "balls": "circle",
    "box": "square",
    "boxes": "square",
    "block": "square",
    "blocks": "square",
    "donut": "ring",
    "donuts": "ring",
    "doughnut": "ring",
    "doughnuts": "ring",
    "hoop": "ring",
    "hoops": "ring",
}

# ---------------------------------------------------------------------------------------------------- sizes
# Base radius as a fraction of S (at 96 px: 12 px and 18 px), i.e. the radius of a circle; the other shapes
# are scaled to a similar area (see render.SHAPE_GEOMETRY).
SIZES: dict[str, float] = {"small": 0.125, "large": 0.19}

# -------------------------------------------------------------------------------------------------- motions
DIRECTIONS: dict[str, tuple[float, float]] = {  # unit vectors in image coordinates (x right, y down)
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "up_right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "down_left": (-math.sqrt(0.5), math.sqrt(0.5)),
    "down_right": (math.sqrt(0.5), math.sqrt(0.5)),
}
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "bounce", "rotate", "grow", "shrink", "still")
SPEEDS: tuple[str, ...] = ("slow", "fast")

# What each speed means, per motion kind (over the whole clip, u = 0 -> 1):
TRAVEL: dict[str, float] = {"slow": 0.25, "fast": 0.45}  # straight-line distance, in S
BOUNCES: dict[str, int] = {"slow": 1, "fast": 2}  # hops of a bouncing object
BOUNCE_HEIGHT = 0.3  # hop height, in S
ROTATION_DEG: dict[str, float] = {"slow": 90.0, "fast": 180.0}  # clockwise on screen
# Scale of a growing object from first to last frame (a shrinking one runs it backwards); s0 * s1 ~ 1, so the
# base size is the geometric middle of the clip.
GROWTH: dict[str, tuple[float, float]] = {"slow": (0.8, 1.25), "fast": (0.65, 1.5)}

# --------------------------------------------------------------------------------------------- backgrounds
BACKGROUND_STYLES: tuple[str, ...] = ("solid", "gradient", "stripes")
# Brightness swing of the gradient (from -x to +x) and stripe contrast, as a fraction toward black/white:
# small enough (< ~12 CIELAB units) that every background pixel stays nearest its own colour name and far
# below the object/background separation the analyzer segments on.
GRADIENT_AMPLITUDE = 0.12
STRIPE_CONTRAST = 0.15

# ---------------------------------------------------------------------------------------------------- camera
CAMERAS: tuple[str, ...] = ("still", "pan_left", "pan_right", "zoom_in", "zoom_out")
PAN_TRAVEL = 0.15  # camera travel over the clip, in S (the scene moves the opposite way on screen)
ZOOM_RANGE: dict[str, tuple[float, float]] = {"zoom_in": (1.0, 1.2), "zoom_out": (1.2, 1.0)}

# ------------------------------------------------------------------------------------------------- layout
# Where an object starts: the cell of a 3 x 3 grid over the frame that holds its centre at the first frame
# (thirds of the width and the height). Layout captions name it ("in the top left", "on the right"); a layout
# conditioned model then need not pick its objects' places itself, and users can place them.
POSITIONS: tuple[str, ...] = (
    "top_left",
    "top",
    "top_right",
    "left",
    "center",
    "right",
    "bottom_left",
    "bottom",
    "bottom_right",
)


def position_cell(x: float, y: float) -> str:
    """The grid cell of a point (x, y as fractions of the width and the height; 0 = left / top edge)."""
    col = min(2, max(0, int(x * 3)))
    row = min(2, max(0, int(y * 3)))
    return POSITIONS[3 * row + col]


def cell_bounds(position: str) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of a grid cell, as fractions of the width and the height."""
    i = POSITIONS.index(position)
    row, col = divmod(i, 3)
    return col / 3, (col + 1) / 3, row / 3, (row + 1) / 3


# Token captions name, after the cell, the transformer token that holds an object's centre at the first frame
# ("in the top left at c3 r9": column 3, row 9 of the 8-pixel grid from the top left, the default model's 4x VAE
# with 2x2 patches). The 3x3 cell leaves a third of the frame open, so at high noise the best guess is a blur
# over it and the shape word has nothing to sharpen; the token pins the place (session 20: a one-object toy drew
# the named shape at 1,000 steps with the token named and every start on a token corner, `layout_truth(snap=8)`;
# with either alone, blobs).
TOKEN_PX = 8
MAX_TOKENS = 32  # columns / rows a token caption may name (256 pixels)


def token_of(x: float, y: float, token_px: int = TOKEN_PX) -> tuple[int, int]:
    """(column, row) of the token holding pixel (x, y) (from the top left; whole-token edges stay exact)."""
    return math.floor(x / token_px + 1e-6), math.floor(y / token_px + 1e-6)


def token_bounds(token: tuple[int, int], token_px: int = TOKEN_PX) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of a token, in pixels."""
    col, row = token
    return col * token_px, (col + 1) * token_px, row * token_px, (row + 1) * token_px


# ----------------------------------------------------------------------------------------------- clip format
# (width, height); all multiples of 16 as the VAE (8x) and 2x2 patching need.
ASPECTS: dict[str, tuple[int, int]] = {"square": (96, 96), "landscape": (128, 96), "portrait": (96, 128)}
FRAME_COUNTS: tuple[int, ...] = (9, 17, 33)  # 4k + 1, as the causal VAE wants
FPS = 8.0
MAX_OBJECTS = 3

# ------------------------------------------------------------------------------------ held-out compositions
# (colour, shape, motion) triples that never appear in training data: every pair inside a triple does appear,
# so a model that composes attributes can still draw them. One triple per motion, every colour and shape
# at least once.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "left"),
    ("orange", "ring", "right"),
    ("yellow", "square", "up"),
    ("green", "star", "down"),
    ("cyan", "circle", "up_left"),
    ("blue", "cross", "up_right"),
    ("purple", "triangle", "down_left"),
    ("pink", "square", "down_right"),
    ("blue", "circle", "bounce"),
    ("green", "triangle", "rotate"),
    ("red", "ring", "grow"),
    ("purple", "star", "shrink"),
    ("orange", "cross", "still"),
)
_HELD_OUT_SET = frozenset(HELD_OUT)


def is_held_out(color: str, shape: str, motion: str) -> bool:
    """True if this (colour, shape, motion) composition is reserved for evaluation."""
    return (color, shape, motion) in _HELD_OUT_SET


def motion_valid(shape: str, motion: str) -> bool:
    """A rotation of a circle or ring is invisible, so those shapes never 'rotate'."""
    return not (motion == "rotate" and SYMMETRY[shape] == 0)


def has_speed(motion: str) -> bool:
    return motion != "still"


# ----------------------------------------------------------------------------------------- colour science
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_D65 = np.array([0.95047, 1.0, 1.08883])


_V = np.arange(256, dtype=np.float32) / 255.0
_SRGB_DECODE = np.where(_V <= 0.04045, _V / 12.92, ((_V + 0.055) / 1.055) ** 2.4).astype(np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 or 0..255 floats (..., 3) -> CIELAB (D65) float32 (..., 3); distances ~ perceived."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:  # table lookup: the sRGB decode is the slow part on whole videos
        c = _SRGB_DECODE[rgb]
    else:
        c = rgb.astype(np.float32) / 255.0
        c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (c @ _SRGB_TO_XYZ.T.astype(np.float32)) / _D65.astype(np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def palette_lab(palette: dict[str, tuple[int, int, int]]) -> tuple[list[str], np.ndarray]:
    """-> (names, (n, 3) Lab) for nearest-colour lookups."""
    names = list(palette)
    return names, rgb_to_lab(np.array([palette[n] for n in names], dtype=np.float32))
