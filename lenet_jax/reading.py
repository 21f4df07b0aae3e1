"""Reading whole numbers (issue #29): the paper's space-displacement network (Sec. VII).

A conv-C5 preset swept along a strip (``LeNet(sweep=True)``) answers every 4 pixels; the
"between digits" class is a constant logit, ``-j`` (the paper's rubbish class, so no new
parameter), and CTC (``optax.ctc_loss``) trains the sweep on strips of MNIST digits
(``lenet_jax.strips``) without saying where each digit is. ``train_numbers`` is the
training story, ``read`` the answers' decoding, ``NumberReader`` reads pictures cut to
strips by ``evaluation.number_strip``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lenet_jax import checkpoint, evaluation, inference, ink, models, strips, training, zoo
from lenet_jax.config import TrainConfig
from lenet_jax.data import Dataset, split_validation
from lenet_jax.errors import UserError
from lenet_jax.reporting import MetricsLog
from lenet_jax.runtime import phase

WIDTH = strips.FIELD + strips.STEP * 44  # 208 px: every one of 330,000 composed strips fits
EVAL_STRIPS = 2000  # validation (selects runs/best) and test strips read after each pass
SINGLE_WEIGHT = 1.0  # single digits' cross-entropy beside each batch of strips


def with_blank(logits: jax.Array, blank_logit: float) -> jax.Array:
    """(N, K, 10) answers -> (N, K, 11), the blank (``strips.BLANK``) last."""
    blank = jnp.full(logits.shape[:-1] + (1,), blank_logit, logits.dtype)
    return jnp.concatenate([logits, blank], -1)


def ctc_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean CTC loss of (N, K, 11) answers (blank last) for (N, D) digit labels, -1 after
    the last digit."""
    n, k, _ = logits.shape
    return optax.ctc_loss(logits, jnp.zeros((n, k)), jnp.maximum(labels, 0),
                          (labels < 0).astype(jnp.float32), blank_id=strips.BLANK).mean()


def _loss(params: Any, state: training.TrainState, strip_images: jax.Array,
          strip_labels: jax.Array, digits: jax.Array, digit_labels: jax.Array,
          blank_logit: float) -> jax.Array:
    preset = state.module.preset
    swept = state.apply_fn({"params": params}, models.preprocess(strip_images, preset),
                           sweep=True)
    single = state.apply_fn({"params": params}, models.preprocess(digits, preset))
    return (ctc_loss(with_blank(swept, blank_logit), strip_labels) + SINGLE_WEIGHT
            * optax.softmax_cross_entropy_with_integer_labels(single, digit_labels).mean())


@functools.partial(jax.jit, static_argnames=("batch_size", "blank_logit"), donate_argnums=0)
def _train_pass(state: training.TrainState, key: jax.Array, strip_images: jax.Array,
                strip_labels: jax.Array, digits: jax.Array, digit_labels: jax.Array,
                batch_size: int, blank_logit: float
                ) -> tuple[training.TrainState, jax.Array, jax.Array]:
    """One pass over the strips in a random order (the last partial batch left out),
    each batch of strips beside a batch of random single digits, as one compiled call;
    returns the pass's mean loss and the index of its first non-finite step (-1: none)."""
    order_key, digit_key = jax.random.split(key)
    steps = strip_images.shape[0] // batch_size
    order = jax.random.permutation(order_key, strip_images.shape[0])[:steps * batch_size]
    picks = jax.random.randint(digit_key, (steps, batch_size), 0, digits.shape[0])

    def body(state, step):
        rows, singles = step
        loss, grads = jax.value_and_grad(_loss)(state.params, state, strip_images[rows],
                                                strip_labels[rows], digits[singles],
                                                digit_labels[singles], blank_logit)
        return state.apply_gradients(grads=grads), loss

    state, losses = jax.lax.scan(body, state, (order.reshape(steps, batch_size), picks))
    bad = ~jnp.isfinite(losses)
    return state, losses.mean(), jnp.where(bad.any(), jnp.argmax(bad), -1)


@functools.partial(jax.jit, static_argnames=("module", "blank_logit"))
def _answers(module: models.LeNet, params: Any, images: jax.Array,
             blank_logit: float) -> jax.Array:
    logits = module.apply({"params": params}, models.preprocess(images, module.preset),
                          sweep=True)
    return jax.nn.softmax(with_blank(logits, blank_logit), -1)


def probabilities(module: models.LeNet, params: Any, images: np.ndarray,
                  blank_logit: float) -> np.ndarray:
    """The sweep's answers, (N, K, 11) probabilities with the blank last, for uint8
    strips (N, 32, 32 + 4k, 1), in chunks of ``inference.eval_batch_size()``."""
    size = inference.eval_batch_size()
    return np.concatenate([np.asarray(_answers(module, params, images[i:i + size],
                                               float(blank_logit)))
                           for i in range(0, len(images), size)])


# Pixels each strip is moved right for the reader's three looks (averaged): a digit
# between two of the sweep's 4-pixel steps is seen off-centre. -1..1 chosen over 0..3,
# -2..1, -1..2 and -2..2 on validation strips (benchmarks/RESULTS.md, "Three looks").
LOOKS = (-1, 0, 1)


def steady_probabilities(module: models.LeNet, params: Any, images: np.ndarray,
                         blank_logit: float) -> np.ndarray:
    """``probabilities`` averaged over the strips moved right by each of ``LOOKS`` pixels
    (background filling the columns they leave): the same (N, K, 11)."""
    width = images.shape[2]
    margin = max(map(abs, LOOKS))
    padded = np.pad(images, ((0, 0), (0, 0), (margin, margin), (0, 0)))
    return np.mean([probabilities(module, params,
                                  padded[:, :, margin - shift:margin - shift + width],
                                  blank_logit)
                    for shift in LOOKS], 0)


def read(module: models.LeNet, params: Any, images: np.ndarray,
         blank_logit: float) -> list[list[strips.Read]]:
    """The digits read in each strip, left to right, with where and how sure (the
    sweep's three looks averaged, as ``NumberReader`` reads)."""
    return strips.decode(steady_probabilities(module, params, images, blank_logit))


def string_accuracy(module: models.LeNet, params: Any, composed: strips.Strips,
                    blank_logit: float) -> float:
    """The share of ``composed`` whose number is read exactly."""
    got = strips.decode_numbers(probabilities(module, params, composed.images, blank_logit))
    return float(np.mean([number_read == number
                          for number_read, number in zip(got, composed.numbers, strict=True)]))


def number_of(digits: list[strips.Read]) -> str:
    return "".join(str(d.digit) for d in digits)


def blank_logit(metadata: dict) -> float:
    """The blank's constant logit a numbers checkpoint was trained with (-j)."""
    return -float(metadata["config"]["rubbish"])


def _pass_seed(seed: int, epoch: int) -> int:
    """The strips of pass ``epoch``: a function of the run's seed and the pass alone, so
    a resumed run composes the same ones."""
    return int(np.random.SeedSequence([seed, epoch, 29]).generate_state(1)[0])


def _line(record: dict, epochs: int) -> str:
    selected = (f"val {100 * record['val_accuracy']:.2f}%  " if "val_accuracy" in record
                else "")
    return (f"pass {record['epoch']:3d}/{epochs}  loss {record['train_loss']:.4f}  "
            f"numbers read: {selected}test {100 * record['test_accuracy']:.2f}%  "
            f"single digits {100 * record['test_digit_accuracy']:.2f}%  "
            f"{record['strips_per_second']:,.0f} strips/s  {record['epoch_seconds']:.1f}s")


def train_numbers(
    config: TrainConfig, dataset: Dataset, run_dir: Path, resume: bool = False,
    progress: bool = True, log: Callable[[str], None] = training.log_to_terminal,
    writes_the_run: bool = True,
) -> dict:
    """Train the swept network on ``config.epochs`` passes of ``config.strips`` fresh
    strips each, checkpointing each pass; returns the last pass's record, whose
    ``val_accuracy``/``test_accuracy`` are the shares of numbers read exactly."""
    # Set up: the settings, the digits, the strips to select and test on, the checkpoints.
    config.validate()
    run_dir = Path(run_dir)
    train, val = split_validation(dataset.train, config.val_size)
    if config.limit_train:
        train = train.take(slice(0, config.limit_train))
    blank = -config.rubbish
    selection = "val_accuracy" if val is not None else "test_accuracy"
    eval_strips = {name: strips.compose(split.images, split.labels, EVAL_STRIPS, seed,
                                        width=WIDTH)
                   for name, split, seed in (("val", val, 1), ("test", dataset.test, 2))
                   if split is not None}
    digits = (jnp.asarray(train.images), jnp.asarray(train.labels))
    steps = config.strips // config.batch_size
    schedule = training.learning_rate_schedule(config, steps)
    checkpoints = checkpoint.RunCheckpoints(run_dir, writes_links=writes_the_run)
    with phase("init"):
        state = training.create_train_state(config, steps)
        state, start_epoch = training.resumed(state, config, checkpoints, run_dir, resume, log)
    log(f"{config.preset} reading numbers: {config.strips:,} strips of 1-{strips.MOST_DIGITS} "
        f"digits a pass from {len(train):,} training digits, batch {config.batch_size} "
        f"(and as many single digits), Adam {config.learning_rate:g} {config.schedule}, "
        f"blank logit {blank:g}, {config.init} start, on {jax.default_backend()}")
    metrics_log = MetricsLog(run_dir, resume_epoch=start_epoch, write=writes_the_run,
                             config=dataclasses.asdict(config), selection=selection)
    bar = tqdm(total=config.epochs, initial=start_epoch, unit="pass", disable=not progress,
               leave=False, dynamic_ncols=True)

    # Each pass: compose, train, read the validation and test strips, save, log.
    record: dict = {}
    with training.closing_at_the_end(bar, checkpoints, metrics_log):
        for epoch in range(start_epoch, config.epochs):
            with phase("work"):
                start = time.perf_counter()
                composed = strips.compose(train.images, train.labels, config.strips,
                                          _pass_seed(config.seed, epoch), width=WIDTH)
                state, loss, first_bad = _train_pass(state,
                                                     training.epoch_key(config.seed, epoch),
                                                     jnp.asarray(composed.images),
                                                     jnp.asarray(composed.labels), *digits,
                                                     config.batch_size, blank)
                loss, first_bad = jax.device_get((loss, first_bad))  # the pass's host sync
                seconds = time.perf_counter() - start
                if first_bad >= 0:
                    raise training.TrainingDivergedError(epoch * steps + int(first_bad),
                                                         epoch + 1)
                record = {"epoch": epoch + 1, "step": int(state.step),
                          "train_loss": float(loss),
                          "strips_per_second": config.strips / seconds,
                          "epoch_seconds": seconds,
                          "learning_rate": training.learning_rate_at(schedule,
                                                                     int(state.step) - 1)}
                for name, composed_strips in eval_strips.items():
                    record[f"{name}_accuracy"] = string_accuracy(state.module, state.params,
                                                                 composed_strips, blank)
                record["test_digit_accuracy"] = inference.evaluate(
                    state.module, state.params, dataset.test.images,
                    dataset.test.labels)["accuracy"]
            with phase("save"):
                metadata = training.run_metadata(config, dataset, record, selection, None)
                checkpoints.save(epoch + 1, state.params, state.opt_state, metadata)
                metrics_log.append(record)
                checkpoint.point_workdir_best(run_dir.parent, run_dir, writes_the_run)
            log(_line(record, config.epochs))
            bar.update()
    return record


class NotANumbersModelError(UserError, ValueError):
    """A checkpoint that cannot read numbers: it was not trained on the numbers task."""


@dataclasses.dataclass(frozen=True)
class Number:
    """A number read in a picture: its digits, each with the picture's column where the
    sweep was surest of it, and whether the picture is "not a number"
    (``NumberReader.read``)."""

    digits: list[strips.Read]
    strip: ink.Strip  # what the network read
    probabilities: np.ndarray  # (K, 11): the sweep's answers along the strip, blank last
    rejected: bool = False  # "not a number": the digits read are not to be trusted

    @property
    def number(self) -> str:
        return number_of(self.digits)

    @property
    def xs(self) -> list[float]:
        """Each digit's column in the picture."""
        return [self.strip.picture_x(d.centre) for d in self.digits]

    def to_json(self) -> dict:
        return {"number": self.number, "rejected": self.rejected,
                "digits": [{"digit": d.digit, "x": round(x, 1), "column": d.column,
                            "confidence": d.confidence}
                           for d, x in zip(self.digits, self.xs, strict=True)]}

    def __str__(self) -> str:
        if not self.digits:
            return "no digits read"
        surest = min(d.confidence for d in self.digits)
        if self.rejected:
            return f"not a number (read as {self.number}, least sure digit {100 * surest:.0f}%)"
        return f"{self.number} (least sure digit {100 * surest:.0f}%)"


# "Not a number": more than this share of the digits standing apart are "not a digit" to
# the shipped single-digit reader, the digits' mean confidence is under this, or ink
# covers more than this share of the strip (``ink.coverage``: a digit's strokes leave
# most of its box empty; at most 45% of 3,500 validation numbers', 47% of numbers drawn
# with a pen a quarter of their height). Validation numbers read right and refused:
# 0-1% (benchmarks/RESULTS.md, "Not a number").
NOT_DIGITS_SHARE = 0.5
LEAST_MEAN_CONFIDENCE = 0.65
MOST_INK = 0.55


@dataclasses.dataclass(frozen=True)
class NumberReader:
    """A numbers checkpoint ready to read pictures: ``lenet-jax read`` asks this."""

    module: models.LeNet
    params: Any
    metadata: dict
    source: str
    # Judges each digit read: a numbers checkpoint learns no "not a digit" (it trains on
    # strips of digits alone), the shipped single-digit `original` did.
    judge: evaluation.Predictor

    @classmethod
    def load(cls, path: str | Path) -> NumberReader:
        """From a checkpoint path (``checkpoint.resolve_step``) trained with
        ``--task numbers``; ``NotANumbersModelError`` for any other."""
        manager_dir, step = checkpoint.resolve_step(path)
        params, metadata = checkpoint.restore_for_inference(manager_dir / str(step))
        return cls.of(params, metadata, str(manager_dir / str(step)))

    @classmethod
    def pretrained(cls, preset: str = "original") -> NumberReader:
        """The number reader shipped in the package (``lenet_jax.zoo``)."""
        params, metadata = zoo.restore(preset, zoo.NUMBERS)
        return cls.of(params, metadata, f"pretrained number reader {preset} (lenet-jax)")

    @classmethod
    def of(cls, params: Any, metadata: dict, source: str) -> NumberReader:
        if metadata.get("task") != "numbers":
            raise NotANumbersModelError(
                f"{source} was trained to read one digit, not numbers: read them with a "
                f"checkpoint of the numbers task, or the shipped number reader")
        module, _ = models.create_model(metadata["preset"])
        return cls(module, params, metadata, source, evaluation.Predictor.pretrained("original"))

    def read(self, pictures: list[ink.Strip]) -> list[Number]:
        """The number in each strip, all strips in one call (padded to the widest)."""
        if not pictures:
            return []
        widest = max(p.pixels.shape[1] for p in pictures)
        images = np.zeros((len(pictures), strips.HEIGHT, widest, 1), np.uint8)
        for row, picture in zip(images, pictures, strict=True):
            row[:, :picture.pixels.shape[1]] = picture.pixels
        answers = steady_probabilities(self.module, self.params, images,
                                       blank_logit(self.metadata))
        swept = [answer[:(picture.pixels.shape[1] - strips.FIELD) // strips.STEP + 1]
                 for picture, answer in zip(pictures, answers, strict=True)]
        read = [strips.decode(own[None])[0] for own in swept]
        # A digit alone in a piece of ink that stands apart is also read as one centred
        # digit, the two readings' log-probabilities added: +0.1-1 point of test strips
        # read, +8.5 of printed 6-digit numbers (benchmarks/RESULTS.md, "Reading twice").
        alone = [(n, k, digit) for n, picture in enumerate(pictures)
                 for k, digit in _alone(read[n], picture.pixels[..., 0])]
        not_digits: list[list[bool]] = [[] for _ in pictures]
        if alone:
            logits, _ = inference.predict_images(self.module, self.params,
                                                 np.stack([digit for _, _, digit in alone]))
            single = np.asarray(jax.nn.log_softmax(logits))
            for (n, k, _), own in zip(alone, single, strict=True):
                read[n][k] = _both(read[n][k], swept[n][read[n][k].column], own)
            # Each digit standing apart is judged as the single-digit reader judges a
            # picture of one digit (``ink.mnist_digit``: its pen too). Touching digits
            # cannot be cut cleanly, so their confidence alone speaks for them.
            as_drawn = [ink.mnist_digit(digit[..., 0].astype(np.float32))
                        for _, _, digit in alone]
            inked = [digit for digit in as_drawn if digit is not None]
            answers = iter(self.judge.answer(np.stack(inked)) if inked else [])
            for (n, _, _), digit in zip(alone, as_drawn, strict=True):
                not_digits[n].append(digit is None or bool(next(answers).rejected))
        return [Number(digits, picture, own,
                       _not_a_number(digits, judged, ink.coverage(picture.pixels[..., 0])))
                for digits, picture, own, judged
                in zip(read, pictures, swept, not_digits, strict=True)]

    def plot(self, number: Number, path: Path, name: str) -> Path:
        """The paper's Fig. 22-24 for one picture read (``explain.plot_sweep``)."""
        from lenet_jax import explain

        verdict = "not a number, read as" if number.rejected else "read as"
        title = f"{name}: {verdict} {number.number or 'nothing'}"
        return explain.plot_sweep(number.strip.pixels, number.probabilities, number.digits,
                                  Path(path), title)


def _not_a_number(digits: list[strips.Read], not_digits: list[bool], coverage: float) -> bool:
    """No digit read, more than ``NOT_DIGITS_SHARE`` of those standing apart "not a
    digit", the digits' mean confidence under ``LEAST_MEAN_CONFIDENCE``, or the ink's
    ``coverage`` of the strip over ``MOST_INK``."""
    return bool(not digits or (not_digits and np.mean(not_digits) > NOT_DIGITS_SHARE)
                or np.mean([d.confidence for d in digits]) < LEAST_MEAN_CONFIDENCE
                or coverage > MOST_INK)


def _alone(digits: list[strips.Read], strip: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(index in ``digits``, the piece as MNIST has a digit) for each digit read whose
    field centre lies in exactly one piece of ink standing apart (``ink.apart``) and is
    the only one there."""
    pieces = ink.apart(strip)
    owners = []
    for digit in digits:
        inside = [p for p, (start, stop, _) in enumerate(pieces)  # within half a step
                  if start - strips.STEP // 2 <= digit.centre < stop + strips.STEP // 2]
        owners.append(inside[0] if len(inside) == 1 else -1)
    return [(owners.index(p), piece) for p, (_, _, piece) in enumerate(pieces)
            if owners.count(p) == 1]


def _both(digit: strips.Read, swept: np.ndarray, single: np.ndarray) -> strips.Read:
    """A digit read by the sweep (its answer, 11 probabilities) and by the single-digit
    network (10 log-probabilities): the class both find likeliest together."""
    digits = swept[:strips.BLANK]
    together = np.log(digits / digits.sum() + 1e-12) + single
    together = np.exp(together - together.max())
    together /= together.sum()
    best = int(together.argmax())
    return dataclasses.replace(digit, digit=best, confidence=float(together[best]))


def read_numbers(pictures: list[str | Path | bytes],
                 ckpt: str | Path | None = None) -> list[str | None]:
    """The numbers written in ``pictures`` (files or their bytes), read by the numbers
    checkpoint ``ckpt`` or the shipped reader, None for "not a number":
    ``lenet_jax.read_numbers(["cheque.png"])``."""
    reader = NumberReader.pretrained() if ckpt is None else NumberReader.load(ckpt)
    return [None if n.rejected else n.number
            for n in reader.read([evaluation.number_strip(p) for p in pictures])]
