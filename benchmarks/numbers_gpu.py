"""#29 exploration on a lent GPU: CTC training of the swept `original` on strips, several
recipes in one run, string accuracy on 1,000 test strips per length and on touching digits
(benchmarks/RESULTS.md, "Numbers on a GPU"). Reads MNIST from an .npz (the device image
has no TFDS; `train_throughput.py --save-arrays mnist.npz`), prints a table, writes JSON
to $OUT. `ONLY="pool 60,..."` picks recipes, `BUDGET` seconds stops starting new ones,
`SCALE=0.01` shrinks everything for a CPU smoke run."""

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lenet_jax import models, strips, zoo  # noqa: E402

ARRAYS = os.environ.get("ARRAYS", "mnist.npz")
BUDGET = float(os.environ.get("BUDGET", "300"))  # seconds for all configs
SCALE = float(os.environ.get("SCALE", "1"))  # shrink for a CPU smoke run
OUT = os.environ.get("OUT", "/tmp/numbers_out")
WIDTH = 32 + 4 * 44
T0 = time.perf_counter()

d = np.load(ARRAYS)
train_x, train_y = d["train_images"][:55000], d["train_labels"][:55000]
test_x, test_y = d["test_images"], d["test_labels"]


def _compose(args):
    split, count, seed, lengths, gaps = args
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    s = strips.compose(x, y, count, seed, lengths=lengths, gaps=gaps)
    img = np.zeros((count, 32, WIDTH, 1), np.uint8)
    img[:, :, :s.images.shape[2]] = s.images
    return img, s.labels


def compose_many(split, count, seed0, chunks, lengths=(1, 6), gaps=strips.GAPS):
    jobs = [(split, count // chunks, seed0 + i, lengths, gaps) for i in range(chunks)]
    with ProcessPoolExecutor(min(16, os.cpu_count())) as pool:
        parts = list(pool.map(_compose, jobs))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def numbers(labels):
    return ["".join(str(v) for v in row if v >= 0) for row in labels]


POOL = int(300_000 * SCALE)
pool_x, pool_y = compose_many("train", POOL, 1000, 32)
fixed_x, fixed_y = pool_x[:int(30000 * SCALE)], pool_y[:int(30000 * SCALE)]
n_test = int(1000 * SCALE)
tests = {L: compose_many("test", n_test, 5000 + 10 * L, 4, (L, L)) for L in range(1, 7)}
tests["touching"] = compose_many("test", n_test, 6000, 4, (2, 6), (-4, 0))
print(f"composed in {time.perf_counter() - T0:.1f}s", jax.devices(), flush=True)

module, pretrained_params, _ = zoo.pretrained("original")
preset = module.preset
dev_pool = jax.device_put(pool_x)
dev_pool_y = jax.device_put(pool_y)
dev_fixed = jax.device_put(fixed_x)
dev_fixed_y = jax.device_put(fixed_y)
dev_tx, dev_ty = jax.device_put(train_x), jax.device_put(train_y)


def sweep_logits(p, x, blank):
    out, maps = module.apply({"params": p["net"]}, models.preprocess(x, preset), sweep=True,
                             mutable=["maps"])
    if blank == "code":
        f6 = maps["maps"]["layers"]["F6"]
        b = -preset.rbf_logit_scale * jnp.sum((f6 - p["code"]) ** 2, -1, keepdims=True)
    elif blank == "learned":
        b = jnp.broadcast_to(p["blank"], out.shape[:-1] + (1,))
    else:
        b = jnp.full(out.shape[:-1] + (1,), float(blank), out.dtype)
    return jnp.concatenate([b, out], -1)  # blank id 0


def run(name, start, blank, passes, data, batch=64, lr=1e-3, mix=1.0, init_blank=-6.0):
    t = time.perf_counter()
    fresh = start != "pre"
    params = {"net": models.init_params(module, jax.random.key(0)) if fresh else pretrained_params}
    if blank == "learned":
        params["blank"] = jnp.float32(init_blank)
    if blank == "code":
        params["code"] = jnp.zeros((84,), jnp.float32)
    xs, ys = (dev_pool, dev_pool_y) if data == "pool" else (dev_fixed, dev_fixed_y)
    steps = int(passes * 30000 * SCALE) // batch
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    state = opt.init(params)

    def loss_fn(p, x, labels, xd, yd):
        logits = sweep_logits(p, x, blank)
        n, k, _ = logits.shape
        lab = jnp.where(labels >= 0, labels + 1, 0)
        ctc = optax.ctc_loss(logits, jnp.zeros((n, k)), lab, (labels < 0).astype(jnp.float32),
                             blank_id=0).mean()
        single = module.apply({"params": p["net"]}, models.preprocess(xd, preset))
        return ctc + mix * optax.softmax_cross_entropy_with_integer_labels(single, yd).mean()

    @jax.jit
    def step(p, s, key, xs, ys, dev_tx, dev_ty):
        k1, k2 = jax.random.split(key)
        b = jax.random.randint(k1, (batch,), 0, xs.shape[0])
        dd = jax.random.randint(k2, (64,), 0, dev_tx.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, xs[b], ys[b], dev_tx[dd], dev_ty[dd])
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    key = jax.random.key(1)
    losses = []
    for i in range(steps):
        key, sub = jax.random.split(key)
        params, state, loss = step(params, state, sub, xs, ys, dev_tx, dev_ty)
        if i % 500 == 0:
            losses.append(float(loss))
    train_s = time.perf_counter() - t

    predict = jax.jit(lambda p, x: sweep_logits(p, x, blank).argmax(-1))
    result = {"name": name, "start": start, "blank": blank, "passes": passes, "data": data,
              "batch": batch, "lr": lr, "mix": mix, "steps": steps, "train_s": round(train_s, 1),
              "losses": losses[::max(1, len(losses) // 10)]}
    for key_, (x, y) in tests.items():
        got = np.concatenate([np.asarray(predict(params, x[i:i + 1000]))
                              for i in range(0, len(x), 1000)])
        read = []
        for row in got:
            out, prev = [], 0
            for c in row:
                if c != prev and c != 0:
                    out.append(str(c - 1))
                prev = c
            read.append("".join(out))
        result[str(key_)] = float(np.mean([r == t for r, t in zip(read, numbers(y), strict=True)]))
    single = jax.jit(lambda p, x: module.apply({"params": p["net"]}, models.preprocess(x, preset)))
    result["single"] = float((np.asarray(single(params, test_x)).argmax(-1) == test_y).mean())
    if blank == "learned":
        result["blank_value"] = float(params["blank"])
    return result


CONFIGS = [
    ("baseline fixed30k 5", "pre", -6, 5, "fixed", 64, 1e-3),
    ("pool 20", "pre", -6, 20, "pool", 64, 1e-3),
    ("pool 20 learned blank", "pre", "learned", 20, "pool", 64, 1e-3),
    ("pool 20 blank code", "pre", "code", 20, "pool", 64, 1e-3),
    ("pool 20 batch256 lr2e-3", "pre", -6, 20, "pool", 256, 2e-3),
    ("pool 60", "pre", -6, 60, "pool", 64, 1e-3),
    ("scratch pool 60", "scratch", -6, 60, "pool", 64, 1e-3),
]
os.makedirs(OUT, exist_ok=True)
results = []
only = os.environ.get("ONLY")
if only:
    CONFIGS = [c for name in only.split(",") for c in CONFIGS if c[0] == name]
for cfg in CONFIGS:
    if time.perf_counter() - T0 > BUDGET:
        print("budget spent, skipping", cfg[0], flush=True)
        continue
    r = run(*cfg)
    results.append(r)
    print(json.dumps(r), flush=True)
    with open(os.path.join(OUT, "numbers.json"), "w") as f:
        json.dump(results, f, indent=1)
print("| config | train s | all 1-6 | 1 | 2 | 3 | 4 | 5 | 6 | touching | single |")
for r in results:
    mean = np.mean([r[str(L)] for L in range(1, 7)])
    per_length = " | ".join(f"{r[str(L)]:.3f}" for L in range(1, 7))
    print(f"| {r['name']} | {r['train_s']} | {mean:.3f} | {per_length} "
          f"| {r['touching']:.3f} | {r['single']:.4f} |")
