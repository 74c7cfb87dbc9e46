"""Captions of Shapes-world clips and the parser that reads them back.

- `dense_caption(truth)`: the training caption. Canonical and complete: every object's size, colour, shape,
  motion and speed, then the background and the camera, in a fixed order and wording, so a small model sees
  one consistent phrasing of every fact (CogVideoX trains on such dense captions and rewrites short user
  prompts into them). Objects come first so that, if a text encoder truncates, the least important facts go.
  Kept short on purpose (<= ~230 characters for three objects) because the shipped model's byte-level T5
  spends one token per character.
- `short_caption(truth, rng)`: what a user would type, with varied phrasing (templates, synonyms, word
  order) and some attributes left out (size, speed, background style, a still camera).
- `parse_prompt(text)`: text -> `SceneTruth` with `None` for anything unstated. Reads both caption styles
  and reasonable free phrasing ("two red circles sliding left on a grey backdrop").
- `enhance_prompt(text)`: the prompt rewriter: parse, fill the gaps, re-emit the dense caption.
- `scene_target(truth)`: the caption's meaning as a fixed-order record ("1 red small triangle up fast ; ..."),
  the target of the text encoder's parse pre-training (`cinegen.train.text_encoder`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cinegen.world import vocab as V
from cinegen.world.render import ObjectTruth, SceneTruth, complete_truth, layout_truth

__all__ = [
    "dense_caption",
    "short_caption",
    "short_caption_and_stated",
    "parse_prompt",
    "enhance_prompt",
    "scene_target",
    "position_phrase",
    "token_phrase",
    "ENHANCER_STYLES",
]

# `prompt_enhancer` values of Shapes-world models: plain dense captions, + start cells, + start cells and tokens
ENHANCER_STYLES = ("shapes", "shapes-layout", "shapes-tokens")

_NUMBER = {1: "one", 2: "two", 3: "three"}

# ------------------------------------------------------------------------------------------ dense caption
_DENSE_DIRECTION = {
    "left": "to the left",
    "right": "to the right",
    "up": "upward",
    "down": "downward",
    "up_left": "up and to the left",
    "up_right": "up and to the right",
    "down_left": "down and to the left",
    "down_right": "down and to the right",
}
_DENSE_ADVERB = {"slow": "slowly", "fast": "quickly"}
# Verb (singular, plural) + what follows the adverb, per motion kind.
_DENSE_VERB = {
    "bounce": ("bounces", "bounce", "up and down"),
    "rotate": ("spins", "spin", "clockwise"),
    "grow": ("grows", "grow", "larger"),
    "shrink": ("shrinks", "shrink", "smaller"),
}
_DENSE_STYLE = {"solid": "plain", "gradient": "gradient", "stripes": "striped"}
_DENSE_CAMERA = {
    "still": "static camera",
    "pan_left": "camera pans left",
    "pan_right": "camera pans right",
    "zoom_in": "camera zooms in",
    "zoom_out": "camera zooms out",
}


def _where(o: ObjectTruth) -> list[str]:
    """The stated start of an object as caption words: "in the top left", "in the top left at c3 r9" (token
    captions), "at c3 r9"; [] if not stated."""
    words = ([position_phrase(o.position)] if o.position else []) + ([token_phrase(o.token)] if o.token else [])
    return [" ".join(words)] if words else []


def token_phrase(token: tuple[int, int]) -> str:
    """The caption words of a start token (`vocab.token_of`): "at c3 r9" (column 3, row 9 from the top left)."""
    return f"at c{token[0]} r{token[1]}"


def _groups(truth: SceneTruth) -> list[tuple[ObjectTruth, int, list[str]]]:
    """Objects identical but for their position merged into (object without position, count, stated positions
    of its members as caption words), in order of first appearance."""
    out: list[tuple[ObjectTruth, int, list[str]]] = []
    for o in truth.objects:
        bare = dataclasses.replace(o, position=None, token=None)
        for i, (g, n, where) in enumerate(out):
            if g == bare:
                out[i] = (g, n + 1, where + _where(o))
                break
        else:
            out.append((bare, 1, _where(o)))
    return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _dense_motion(o: ObjectTruth, plural: bool) -> str:
    adv = _DENSE_ADVERB.get(o.speed or "", "")
    if o.motion == "still":
        return "stay still" if plural else "stays still"
    if o.motion in _DENSE_DIRECTION:
        return f"{adv} {'move' if plural else 'moves'} {_DENSE_DIRECTION[o.motion]}"
    sing, plur, tail = _DENSE_VERB[o.motion or ""]
    return f"{adv} {plur if plural else sing} {tail}"


def position_phrase(position: str) -> str:
    """The caption words of a grid cell: "in the top left", "at the top", "on the left", "in the center"."""
    row, _, col = position.rpartition("_")
    if position == "center":
        return "in the center"
    if not row:
        return f"at the {col}" if col in ("top", "bottom") else f"on the {col}"
    return f"in the {row} {col}"


def dense_caption(truth: SceneTruth) -> str:
    """The canonical, complete training caption of a (complete) truth. Objects with a stated position (layout
    captions, `ClipSpec.truth(layout=True)`) get it after their noun: "A large red circle in the top left slowly
    moves to the right." (one phrase per member of a group, joined by "and")."""
    if not truth.complete:
        raise ValueError("dense_caption needs a complete truth (see render.complete_truth)")
    n = truth.count
    parts = [f"{_NUMBER[n].capitalize()} {'shape' if n == 1 else 'shapes'}:"]
    for o, k, where in _groups(truth):
        noun = o.shape if k == 1 else V.SHAPE_PLURALS[o.shape]
        head = f"{_article(o.size or '')} {o.size}" if k == 1 else f"{_NUMBER[k]} {o.size}"
        both = "" if k == 1 else ("both " if k == 2 else "all ")
        at = "".join(f" {p}" if i == 0 else f" and {p}" for i, p in enumerate(where))
        parts.append(f"{head.capitalize()} {o.color} {noun}{at} {both}{_dense_motion(o, k > 1)}.")
    style = _DENSE_STYLE[truth.background_style or "solid"].capitalize()
    parts.append(f"{style} {truth.background} background, {_DENSE_CAMERA[truth.camera or 'still']}.")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------- scene target
_UNSTATED = "-"


def _word(value: str | None) -> str:
    return _UNSTATED if value is None else value.replace("_", " ")


def scene_target(truth: SceneTruth) -> str:
    """What a caption of `truth` states, as a fixed-order record: one group per distinct object in the order
    captions mention them (count, colour, size, shape, motion, speed; "-" = not stated), then the background
    colour, style and camera. Motion and camera names are split at "_" ("up left", "pan right") so every word
    is a caption word. The parse target of `cinegen.train.text_encoder`: to write it, a text encoder must tie
    each object's words to each other (which colour goes with which motion), which a random one cannot."""
    groups = [
        f"{k} {_word(o.color)} {_word(o.size)} {o.shape} {_word(o.motion)} {_word(o.speed)}"
        for o, k, _ in _groups(truth)
    ]
    scene = f"{_word(truth.background)} {_word(truth.background_style)} {_word(truth.camera)}"
    return " ; ".join(groups) + f" | {scene}"


# ------------------------------------------------------------------------------------------ short caption
# Verb phrases as (present participle, 3rd person singular, plural) so they fit every template.
_MOVE = (("moving", "moves", "move"), ("sliding", "slides", "slide"), ("drifting", "drifts", "drift"))
_MOVE += (("gliding", "glides", "glide"), ("traveling", "travels", "travel"))
_DIR_WORDS = {
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward"),
    "down": ("down", "downward"),
    "up_left": ("up and to the left", "diagonally up-left", "toward the upper left", "up and left"),
    "up_right": ("up and to the right", "diagonally up-right", "toward the upper right", "up and right"),
    "down_left": ("down and to the left", "diagonally down-left", "toward the lower left", "down and left"),
    "down_right": (
        "down and to the right",
        "diagonally down-right",
        "toward the lower right",
        "down and right",
    ),
}
_SPECIAL = {  # whole verb phrases for some motions
    "up": (("rising", "rises", "rise"), ("floating upward", "floats upward", "float upward")),
    "down": (("sinking", "sinks", "sink"), ("falling", "falls", "fall")),
    "bounce": (
        ("bouncing", "bounces", "bounce"),
        ("bouncing up and down", "bounces up and down", "bounce up and down"),
        ("hopping", "hops", "hop"),
    ),
    "rotate": (
        ("spinning", "spins", "spin"),
        ("rotating", "rotates", "rotate"),
        ("turning clockwise", "turns clockwise", "turn clockwise"),
        ("spinning in place", "spins in place", "spin in place"),
    ),
    "grow": (
        ("growing", "grows", "grow"),
        ("getting bigger", "gets bigger", "get bigger"),
        ("expanding", "expands", "expand"),
    ),
    "shrink": (
        ("shrinking", "shrinks", "shrink"),
        ("getting smaller", "gets smaller", "get smaller"),
        ("contracting", "contracts", "contract"),
    ),
    "still": (
        ("standing still", "stands still", "stand still"),
        ("sitting still", "sits still", "sit still"),
        ("staying in place", "stays in place", "stay in place"),
        ("resting motionless", "rests motionless", "rest motionless"),
    ),
}
_ADVERBS = {
    "slow": ("slowly", "gently", "at a slow pace"),
    "fast": ("quickly", "fast", "rapidly", "at a fast pace"),
}
_NOUNS = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots"), ("ball", "balls")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "ring": (("ring", "rings"), ("donut", "donuts"), ("hoop", "hoops")),
}
_SHORT_STYLE = {"solid": ("plain", "solid"), "gradient": ("gradient",), "stripes": ("striped",)}
_SHORT_CAMERA = {
    "still": ("with a static camera", "static camera", "the camera stays still"),
    "pan_left": ("as the camera pans left", "camera panning to the left", "while the camera pans left"),
    "pan_right": ("as the camera pans right", "camera panning to the right", "while the camera pans right"),
    "zoom_in": ("as the camera zooms in", "camera zooming in", "while the camera slowly zooms in"),
    "zoom_out": ("as the camera zooms out", "camera zooming out", "while the camera slowly zooms out"),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _short_object(o: ObjectTruth, k: int, rng: np.random.Generator, form: int, say_size: bool, say_speed: bool) -> str:
    """Noun phrase + verb phrase; form 0 = participle ('moving'), 1 = finite verb ('moves' / 'move')."""
    nouns = _NOUNS.get(o.shape, ((o.shape, V.SHAPE_PLURALS[o.shape]),))
    sing, plur = nouns[0 if rng.random() < 0.75 else int(rng.integers(len(nouns)))]
    adjectives = f"{o.size} {o.color}" if say_size else f"{o.color}"
    if k == 1:
        np_ = f"{_article(adjectives)} {adjectives} {sing}"
    else:
        np_ = f"{_pick(rng, ('two', 'a pair of')) if k == 2 else 'three'} {adjectives} {plur}"
    verb_form = 0 if form == 0 else (2 if k > 1 else 1)
    m = o.motion or "still"
    if m in _SPECIAL and (m not in _DIR_WORDS or rng.random() < 0.4):
        vp = _SPECIAL[m][int(rng.integers(len(_SPECIAL[m])))][verb_form]
    else:
        vp = f"{_MOVE[int(rng.integers(len(_MOVE)))][verb_form]} {_pick(rng, _DIR_WORDS[m])}"
    if say_speed and o.speed is not None:
        adv = _pick(rng, _ADVERBS[o.speed])
        prefix = adv.endswith("ly") and rng.random() < 0.4  # "slowly moving left", never "fast moving left"
        vp = f"{adv} {vp}" if prefix else f"{vp} {adv}"
    return f"{np_} {vp}"


def short_caption_and_stated(truth: SceneTruth, rng: np.random.Generator) -> tuple[str, SceneTruth]:
    """A short, varied caption and the truth it actually states (omitted attributes set to None)."""
    say_size = bool(rng.random() < 0.6)
    say_speed = bool(rng.random() < 0.75)
    say_style = bool(rng.random() < (0.8 if truth.background_style != "solid" else 0.2))
    say_camera = truth.camera != "still" or rng.random() < 0.2
    form = int(rng.integers(2))
    groups = _groups(truth)
    objs = [_short_object(o, k, rng, form, say_size, say_speed) for o, k, _ in groups]
    if len(objs) == 1:
        obj_text = objs[0]
    else:
        obj_text = ", ".join(objs[:-1]) + _pick(rng, (" and ", ", and ")) + objs[-1]
        if form == 1 and rng.random() < 0.3:
            obj_text = ", ".join(objs[:-1]) + " while " + objs[-1]
    style = f"{_pick(rng, _SHORT_STYLE[truth.background_style or 'solid'])} " if say_style else ""
    noun = _pick(rng, ("background", "backdrop"))
    bg = f"{style}{truth.background} {noun}"
    cam = _pick(rng, _SHORT_CAMERA[truth.camera or "still"]) if say_camera else ""
    template = int(rng.integers(3)) if form == 0 else int(rng.integers(2))
    if template == 0:
        text = f"{obj_text} {_pick(rng, ('on', 'against', 'over'))} {_article(bg)} {bg}"
    elif template == 1:
        text = f"{_pick(rng, ('on', 'against'))} {_article(bg)} {bg}, {obj_text}"
    else:
        text = f"{_article(bg)} {bg} with {obj_text}"
    if cam:
        text = f"{text}, {cam}" if not cam.startswith(("as ", "while ")) else f"{text} {cam}"
    text = text[0].upper() + text[1:] + "."
    stated = SceneTruth(
        tuple(
            ObjectTruth(
                o.shape,
                o.color,
                o.size if say_size else None,
                o.motion,
                o.speed if say_speed else None,
            )
            for o in truth.objects
        ),
        truth.background,
        truth.background_style if say_style else None,
        truth.camera if say_camera else None,
    )
    return text, stated


def short_caption(truth: SceneTruth, rng: np.random.Generator) -> str:
    """A short user-style caption with varied phrasing (see `short_caption_and_stated`)."""
    return short_caption_and_stated(truth, rng)[0]


# ------------------------------------------------------------------------------------------------- parser
_SHAPE_NOUNS: dict[str, tuple[str, bool]] = {}  # word -> (shape, plural)
for _s in V.SHAPES:
    _SHAPE_NOUNS[_s] = (_s, False)
    _SHAPE_NOUNS[V.SHAPE_PLURALS[_s]] = (_s, True)
for _w, _s in V.SHAPE_SYNONYMS.items():
    _SHAPE_NOUNS[_w] = (_s, _w.endswith("s") and _w not in ("box",))
_COLOR_WORDS = {**{c: c for c in V.COLORS}, **V.COLOR_SYNONYMS}
_BG_WORDS = {**{c: c for c in V.BACKGROUND_COLORS}, **V.BACKGROUND_SYNONYMS}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_SIZE_WORDS["huge"] = "large"
_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "single": 1, "lone": 1, "two": 2, "pair": 2, "three": 3, "trio": 3}
_COUNT_WORDS |= {"1": 1, "2": 2, "3": 3}
_NP_FILLER = {"the", "of", "flat", "bright", "colored", "coloured"}
_STYLE_WORDS = {
    "plain": "solid",
    "solid": "solid",
    "uniform": "solid",
    "gradient": "gradient",
    "graded": "gradient",
    "striped": "stripes",
    "stripes": "stripes",
    "stripy": "stripes",
}
_CUT = {"background", "backdrop", "camera", "scene", *_BG_WORDS, *_STYLE_WORDS}

_RE = {
    "bounce": re.compile(r"\b(bounc\w*|hop\w*)"),
    "rotate": re.compile(r"\b(spin\w*|rotat\w*|turn\w*|twirl\w*|clockwise)"),
    "grow": re.compile(r"\b(grow\w*|expand\w*|enlarg\w*|bigger|swell\w*|inflat\w*)"),
    "shrink": re.compile(r"\b(shrink\w*|contract\w*|smaller|deflat\w*|dwindl\w*)"),
    "still": re.compile(
        r"\b(still|stationary|motionless|static|stays?|staying|sits?|sitting|stands?|standing|rests?|resting|idle"
        r"|unmoving|in place|not move|not moving)\b"
    ),
    "slow": re.compile(r"\b(slow\w*|gentl\w*|leisurel\w*|gradual\w*)"),
    "fast": re.compile(r"\b(quick\w*|fast\w*|rapid\w*|swift\w*|brisk\w*)"),
}
_UP = {
    "up",
    "upward",
    "upwards",
    "rising",
    "rises",
    "rise",
    "top",
    "upper",
    "ascending",
    "ascends",
    "climbing",
}
_UP |= {"climbs", "floats", "floating"}
_DOWN = {"down", "downward", "downwards", "sinking", "sinks", "sink", "falling", "falls", "fall", "bottom"}
_DOWN |= {"lower", "descending", "descends", "dropping", "drops"}
_LEFT = {"left", "leftward", "leftwards"}
_RIGHT = {"right", "rightward", "rightwards"}
_CAMERA_ADJ = {"static", "still", "fixed", "stationary", "locked", "steady", "a", "the", "with", ","}
_FROM_TO = re.compile(
    r"from (?:the )?(left|right|top|bottom)(?: side)? (?:to|toward|towards) (?:the )?(left|right|top|bottom)"
)
_SIDE = {"left": "left", "right": "right", "top": "up", "bottom": "down"}


# Position phrases: a preposition, then a row and/or a column word ("in the top left corner", "at the top",
# "on the left side", "in the middle", "at the top-right"). "to / toward the left" stays a motion.
_POS_PREP = {"in", "at", "on", "near"}
_POS_ROW = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_POS_COL = {"left": "left", "right": "right"}
_POS_MID = {"center", "centre", "middle"}
_POS_TAIL = {"corner", "side", "edge", "part", "half"}
_POS_WORDS = {*_POS_ROW, *_POS_COL, *_POS_MID}


def _cell(words: list[str]) -> str | None:
    """The grid cell named by row / column words (hyphenated pieces split), or None."""
    row = next((_POS_ROW[w] for w in words if w in _POS_ROW), None)
    col = next((_POS_COL[w] for w in words if w in _POS_COL), None)
    if row and col:
        return f"{row}_{col}"
    return row or col or ("center" if any(w in _POS_MID for w in words) else None)


def _token(seg: list[str], j: int) -> tuple[int, int] | None:
    """The start token stated at seg[j:] ("at c3 r9", `token_phrase`), or None."""
    if seg[j : j + 1] != ["at"] or j + 2 >= len(seg):
        return None
    col, row = re.fullmatch(r"c(\d+)", seg[j + 1]), re.fullmatch(r"r(\d+)", seg[j + 2])
    if col is None or row is None or max(int(col[1]), int(row[1])) >= V.MAX_TOKENS:
        return None
    return int(col[1]), int(row[1])


def _positions(seg: list[str]) -> tuple[list[tuple[str | None, tuple[int, int] | None]], list[str]]:
    """Position phrases of an object's segment -> ((cell, token) of each stated start in order, the segment
    without them). A token phrase right after a cell phrase belongs to it ("in the top left at c3 r9")."""
    starts: list[tuple[str | None, tuple[int, int] | None]] = []
    rest: list[str] = []
    j, just_after_cell = 0, False
    while j < len(seg):
        token = _token(seg, j)
        if token is not None:
            if just_after_cell:  # "in the top left at c3 r9": that cell's token
                starts[-1] = (starts[-1][0], token)
            else:
                starts.append((None, token))
            j, just_after_cell = j + 3, False
            continue
        just_after_cell = False
        if seg[j] in _POS_PREP:
            k = j + 1 + (j + 1 < len(seg) and seg[j + 1] == "the")
            words: list[str] = []
            while k < len(seg) and len(words) < 3 and all(p in _POS_WORDS for p in seg[k].split("-")):
                words += seg[k].split("-")
                k += 1
            cell = _cell(words)
            if cell is not None:
                starts.append((cell, None))
                j, just_after_cell = k + (k < len(seg) and seg[k] in _POS_TAIL), True
                continue
        rest.append(seg[j])
        j += 1
    return starts, rest


@dataclass
class _Mention:
    shape: str
    count: int
    size: str | None
    color: str | None
    start: int  # first token of the noun phrase
    noun: int  # index of the shape noun


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[.,;:!?]", text.lower())


def _mentions(tokens: list[str]) -> list[_Mention]:
    out = []
    for i, t in enumerate(tokens):
        if t not in _SHAPE_NOUNS:
            continue
        shape, plural = _SHAPE_NOUNS[t]
        count, size, color, start = None, None, None, i
        j = i - 1
        while j >= 0 and j > i - 6:  # the adjective run right before the noun: "a pair of small red ..."
            w = tokens[j]
            if w in _COUNT_WORDS and count is None:
                count = _COUNT_WORDS[w]
            elif w in ("a", "an"):  # "a pair of ...": the article before a count word
                pass
            elif w in _SIZE_WORDS and size is None:
                size = _SIZE_WORDS[w]
            elif w in _COLOR_WORDS and color is None:
                color = _COLOR_WORDS[w]
            elif w not in _NP_FILLER:
                break
            start = j
            j -= 1
        if count is None or (count == 1 and plural):
            count = 2 if plural else 1
        out.append(_Mention(shape, count, size, color, start, i))
    return out


def _direction(words: list[str], text: str) -> str | None:
    m = _FROM_TO.search(text)
    if m:
        a, b = _SIDE[m.group(1)], _SIDE[m.group(2)]
        opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
        if opposite[a] == b:
            return b
    parts = {p for w in words for p in w.split("-")}
    v = "up" if parts & _UP else ("down" if parts & _DOWN else None)
    h = "left" if parts & _LEFT else ("right" if parts & _RIGHT else None)
    if v and h:
        return f"{v}_{h}"
    return v or h


def _motion(words: list[str]) -> tuple[str | None, str | None]:
    text = " ".join(words)
    motion: str | None = None
    for kind in ("bounce", "rotate", "grow", "shrink"):
        if _RE[kind].search(text):
            motion = kind
            break
    if motion is None:
        motion = _direction(words, text)
    if motion is None and _RE["still"].search(text):
        motion = "still"
    speed = "fast" if _RE["fast"].search(text) else ("slow" if _RE["slow"].search(text) else None)
    if motion == "still":
        speed = None
    return motion, speed


def _camera(tokens: list[str]) -> str | None:
    text = " ".join(tokens)
    m = re.search(r"\bpan(?:s|ning|ned)?\b(?: \w+)?(?: to the)? (left|right)", text)
    if m:
        return f"pan_{m.group(1)}"
    m = re.search(r"\bzoom(?:s|ing|ed)?\b(?: \w+)? (in|out)\b", text)
    if m:
        return f"zoom_{m.group(1)}"
    if "camera" in tokens:
        i = tokens.index("camera")
        window = tokens[max(0, i - 2) : i + 5]
        if _CAMERA_ADJ & set(window) - {"a", "the", "with", ","}:
            return "still"
    return None


def parse_prompt(text: str) -> SceneTruth:
    """Read a caption (dense, short or free phrasing) into a `SceneTruth`; unstated fields are None.

    Objects are shape nouns with the adjective run before them (count, size, colour); an object's motion and
    speed are read from the words between its noun and the next object, up to the first background or
    camera word. Raises ValueError if no shape is named or more than `vocab.MAX_OBJECTS` objects are.
    """
    tokens = _tokens(text)
    # The camera is read from the whole text; each object's motion segment stops at the first camera,
    # background or style word, so "... while the camera pans left" never makes an object move left.
    camera = _camera(tokens)
    mentions = _mentions(tokens)
    if not mentions:
        raise ValueError(f"no shape named in {text!r}; shapes: {', '.join(V.SHAPES)}")
    objects: list[ObjectTruth] = []
    for k, m in enumerate(mentions):
        end = mentions[k + 1].start if k + 1 < len(mentions) else len(tokens)
        seg = tokens[m.noun + 1 : end]
        for j, w in enumerate(seg):
            if w in _CUT or w.startswith(("pan", "zoom")):
                if w == "camera":  # "..., static camera": the adjective belongs to the camera
                    while j > 0 and seg[j - 1] in _CAMERA_ADJ:
                        j -= 1
                seg = seg[:j]
                break
        starts, seg = _positions(seg)
        motion, speed = _motion(seg)
        if motion is not None and not V.motion_valid(m.shape, motion):
            motion, speed = None, None
        if len(starts) == 1 and starts[0][1] is None:  # "two red circles on the left": both there
            starts = starts * m.count
        starts = (starts + [(None, None)] * m.count)[: m.count]
        objects.extend(ObjectTruth(m.shape, m.color, m.size, motion, speed, c, t) for c, t in starts)
    if len(objects) > V.MAX_OBJECTS:
        raise ValueError(f"{len(objects)} objects in {text!r}; the Shapes world holds at most {V.MAX_OBJECTS}")
    background = next((_BG_WORDS[t] for t in tokens if t in _BG_WORDS), None)
    style = next((_STYLE_WORDS[t] for t in tokens if t in _STYLE_WORDS), None)
    return SceneTruth(tuple(objects), background, style, camera)


def enhance_prompt(
    text: str,
    rng: np.random.Generator | None = None,
    *,
    layout: bool = False,
    tokens: bool = False,
    width: int = 96,
    height: int = 96,
    num_frames: int = 17,
) -> str:
    """Prompt rewriting: a short prompt -> the dense caption the model was trained on (gaps filled with
    defaults, or at random with `rng`).

    With `layout` (for models trained on layout captions), every object also gets a start cell: the one the
    prompt states, else one drawn (with `rng`, else seed 0) from a layout of the scene in a `width` x `height`,
    `num_frames` clip where every path stays in frame, as the training clips were laid out (unstated attributes
    are redrawn, then set to the plain defaults, if they do not fit). Raises ValueError if the stated cells and
    motions cannot be laid out ("a large red circle on the right moves right quickly"). With `tokens` (models
    trained on token captions), the same plus each object's start token ("in the top left at c3 r9").
    """
    parsed = parse_prompt(text)
    if not (layout or tokens):
        return dense_caption(complete_truth(parsed, rng))
    draw = rng if rng is not None else np.random.default_rng(0)
    # Unstated attributes drawn at random may not fit the frame together (three objects are crowded at 96 px):
    # redraw them, then fall back to the plain defaults (small in company, slow), which fit most often.
    for k in range(30):
        truth = complete_truth(parsed, rng if k < 20 else None)
        spec = layout_truth(truth, width, height, num_frames, draw, tries=500 if k < 20 else 2000)
        if spec is not None:
            return dense_caption(spec.truth(layout=True, tokens=tokens))
    raise ValueError(f"cannot lay out {text!r} in a {width}x{height} clip of {num_frames} frames")
