"""Numbers as rows of MNIST digits (issue #29): the strips a space-displacement network
reads (LeCun et al. 1998, Sec. VII, "Multiple object recognition: space displacement
neural networks").

``compose`` draws strips of 1-6 digits from one split of MNIST, so training strips come
from the training split and test strips from the test split only. Each digit keeps
MNIST's 20-pixel box in the paper's 32-pixel height, is scaled a little (85-110%),
moved up or down a little (up to 2 pixels) and set after the previous one with a gap
from an overlap (digits touching) to wide spacing. A strip's width is 32 + 4k pixels:
the network's field is 32 pixels wide and it steps 4 pixels, so it answers at k + 1
places (``models.LeNet`` with ``sweep=True``). ``decode`` turns those answers, with a
class for "between digits" after the ten (``BLANK``), into the number read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from lenet_jax.models import SWEEP_STEP as STEP  # the network's stride along a strip

HEIGHT = 32  # the paper's input height
FIELD = 32  # the network's field: the width one answer sees
MOST_DIGITS = 6
GAPS = (-4, 12)  # pixels between one digit's ink and the next's: touching to wide
SCALES = (0.85, 1.1)  # of MNIST's 28 rows: at most 31, within the height
JITTER = 2  # pixels up or down
BLANK = 10  # the class "between digits", after the ten digits (CTC's blank)


@dataclasses.dataclass(frozen=True)
class Strips:
    """Composed numbers, white on black like MNIST."""

    images: np.ndarray  # uint8 (N, 32, W, 1); W = 32 + 4k, the widest strip's, padded
    labels: np.ndarray  # int32 (N, MOST_DIGITS): the digits left to right, -1 after them
    sources: np.ndarray  # int64 (N, MOST_DIGITS): each digit's index in its split, -1 after
    centres: np.ndarray  # float32 (N, MOST_DIGITS): each digit's centre column, -1 after

    @property
    def lengths(self) -> np.ndarray:
        return (self.labels >= 0).sum(1)

    @property
    def numbers(self) -> list[str]:
        """Each strip's digits as a string."""
        return ["".join(str(d) for d in row if d >= 0) for row in self.labels]

    def __len__(self) -> int:
        return len(self.images)


def compose(images: np.ndarray, labels: np.ndarray, count: int, seed: int,
            lengths: tuple[int, int] = (1, MOST_DIGITS),
            gaps: tuple[int, int] = GAPS, width: int | None = None) -> Strips:
    """``count`` strips of ``lengths[0]``-``lengths[1]`` digits (each length about as
    often) drawn from ``images`` (uint8 (N, 28, 28, 1), MNIST's) and their ``labels``; a
    function of ``seed`` alone. ``gaps`` bounds the pixels between neighbours' ink
    (negative: they overlap). ``width`` (32 + 4k) pads every strip to it, one shape for
    every call (training compiles once); a number that would not fit is drawn again."""
    if width is not None and (width < FIELD or (width - FIELD) % STEP):
        raise ValueError(f"width must be {FIELD} + {STEP}k, got {width}")
    rng = np.random.default_rng(seed)
    rows = []
    chosen = np.full((count, MOST_DIGITS), -1, np.int64)
    centres = np.full((count, MOST_DIGITS), -1.0, np.float32)
    n = 0
    while n < count:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        picks = rng.integers(0, len(images), length)
        glyphs = [_glyph(images[i, ..., 0], rng) for i in picks]
        gap = rng.integers(gaps[0], gaps[1] + 1, length)
        # the first digit's centre at least half a field from the edge, so a column sees it
        left = max(0, FIELD // 2 - glyphs[0].shape[1] // 2) + int(rng.integers(0, STEP))
        glyph_widths = np.array([g.shape[1] for g in glyphs])
        starts = (left + np.concatenate([[0], np.cumsum(glyph_widths[:-1])])
                  + np.cumsum(np.concatenate([[0], gap[1:]])))
        end = starts[-1] + glyph_widths[-1]
        wide = max(FIELD, end + max(0, FIELD // 2 - glyphs[-1].shape[1] // 2))
        wide = FIELD + -(-(wide - FIELD) // STEP) * STEP  # 32 + 4k
        if width is not None and wide > width:
            continue
        strip = np.zeros((HEIGHT, wide), np.uint8)
        for glyph, start in zip(glyphs, starts, strict=True):
            top = (HEIGHT - glyph.shape[0]) // 2 + int(rng.integers(-JITTER, JITTER + 1))
            top = int(np.clip(top, 0, HEIGHT - glyph.shape[0]))
            region = strip[top:top + glyph.shape[0], start:start + glyph.shape[1]]
            np.maximum(region, glyph, out=region)  # where ink overlaps, the stronger stroke
        chosen[n, :length] = picks
        centres[n, :length] = starts + glyph_widths / 2
        rows.append(strip)
        n += 1
    widest = width or max((strip.shape[1] for strip in rows), default=FIELD)
    padded = np.zeros((count, HEIGHT, widest, 1), np.uint8)
    for n, strip in enumerate(rows):
        padded[n, :, :strip.shape[1], 0] = strip
    digits = np.where(chosen >= 0, np.asarray(labels)[np.maximum(chosen, 0)], -1)
    return Strips(padded, digits.astype(np.int32), chosen, centres)


def _glyph(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit (28, 28) scaled by a random factor and cut to its ink's columns
    (its rows kept: MNIST centres the 20-pixel box by mass)."""
    size = max(1, round(digit.shape[0] * rng.uniform(*SCALES)))
    scaled = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR))
    columns = np.flatnonzero(scaled.max(0))
    if len(columns) == 0:
        return scaled[:, :1]
    return scaled[:, columns[0]:columns[-1] + 1]


@dataclasses.dataclass(frozen=True)
class Read:
    """One digit read in a strip."""

    digit: int
    column: int  # the sweep's answer that was surest of it
    centre: int  # that answer's field centre, in the strip's pixels
    confidence: float  # that answer's probability of the digit


def decode(probabilities: np.ndarray) -> list[list[Read]]:
    """CTC decoding of the sweep's answers, (N, K, 11) probabilities with ``BLANK`` last:
    the likeliest number, its probability summed over every way the answers can spell it
    (prefix beam search, Hannun et al. 2014, ``BEAM`` prefixes kept), each digit then put
    at the answer surest of it along the likeliest spelling. A run of one digit is one
    digit, and a blank between two runs of the same digit makes them two ("55")."""
    return [_placed(row, _likeliest(row)) for row in np.asarray(probabilities, np.float64)]


def decode_numbers(probabilities: np.ndarray) -> list[str]:
    """``decode``'s numbers as strings, without placing their digits (three fifths of
    the time: training counts the numbers read after every pass)."""
    return ["".join(map(str, _likeliest(row))) for row in np.asarray(probabilities, np.float64)]


BEAM = 8  # prefixes kept: 16 read no more numbers, 2 fewer (benchmarks/RESULTS.md)
# For speed, a digit this unlikely at an answer starts no prefix, and a prefix this unlikely
# beside those kept is dropped (without either, 3,000 validation strips read the same).
_UNLIKELY = 1e-4


def _likeliest(answers: np.ndarray) -> tuple[int, ...]:
    """The likeliest digits for (K, 11) answers; beats each answer's likeliest class
    (greedy decoding) where a digit is spread over answers none of which is sure of it.
    Optax has the loss but no decoder, and TensorFlow's would cost its import."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}  # ends: blank, digit
    likely = answers[:, :BLANK] > _UNLIKELY
    for answer, labels in zip(answers.tolist(), likely, strict=True):
        labels = np.flatnonzero(labels).tolist()
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (blank, digit) in beams.items():
            grown.setdefault(prefix, [0.0, 0.0])[0] += (blank + digit) * answer[BLANK]
            for label in labels:
                p = answer[label]
                if prefix and prefix[-1] == label:  # the same run, or after a blank a new one
                    grown[prefix][1] += digit * p
                    grown.setdefault(prefix + (label,), [0.0, 0.0])[1] += blank * p
                else:
                    grown.setdefault(prefix + (label,), [0.0, 0.0])[1] += (blank + digit) * p
        kept = sorted(grown.items(), key=lambda item: -item[1][0] - item[1][1])[:BEAM]
        total = sum(blank + digit for _, (blank, digit) in kept) or 1.0  # rescaled: no underflow
        beams = {prefix: (blank / total, digit / total) for prefix, (blank, digit) in kept
                 if blank + digit > _UNLIKELY * total}
    return max(beams, key=lambda prefix: sum(beams[prefix]))


def _placed(answers: np.ndarray, digits: tuple[int, ...]) -> list[Read]:
    """``digits`` along (K, 11) answers: the likeliest path that spells them (Viterbi over
    CTC's states, a blank before, between and after), each digit at its surest answer."""
    if not digits:
        return []
    states = [BLANK]
    for digit in digits:
        states += [digit, BLANK]
    scores = np.log(answers[:, states] + 1e-30)  # (K, S)
    best = np.full(len(states), -np.inf)
    best[:2] = scores[0, :2]
    came_from = np.zeros((len(answers), len(states)), int)
    at = np.arange(len(states))
    skips = np.array([k >= 2 and states[k] != BLANK and states[k] != states[k - 2]
                      for k in at])  # from one digit straight to the next, unless it repeats
    for k in range(1, len(answers)):
        stay, step = best, np.concatenate([[-np.inf], best[:-1]])
        skip = np.where(skips, np.concatenate([[-np.inf, -np.inf], best[:-2]]), -np.inf)
        options = np.stack([stay, step, skip])
        choice = options.argmax(0)
        came_from[k] = at - choice
        best = options[choice, at] + scores[k]
    state = len(states) - 1 if best[-1] >= best[-2] else len(states) - 2
    path = [state]
    for k in range(len(answers) - 1, 0, -1):
        state = came_from[k, state]
        path.append(state)
    path.reverse()
    read = []
    for n, digit in enumerate(digits):
        column = max((k for k, state in enumerate(path) if state == 2 * n + 1),
                     key=lambda k: answers[k, digit])
        read.append(Read(digit, column, _centre(column), float(answers[column, digit])))
    return read


def _centre(column: int) -> int:
    return column * STEP + FIELD // 2

