"""The LeNet-5 family in plain NumPy (float64), written from the paper and the tutorials'
definitions, not from the package: the tests' independent reference. Nothing here imports
``lenet_jax``; every constant is written out as the paper or the tutorial gives it."""

from __future__ import annotations

import hashlib

import numpy as np

# LeCun et al. 1998, Appendix A: f(a) = A tanh(S a), A = 1.7159, S = 2/3.
A, S = 1.7159, 2 / 3

# Table I as printed: row i is S2 map i, column j is C3 map j, X = connected.
TABLE_I = (
    "X   XXX  XXXX XX",
    "XX   XXX  XXXX X",
    "XXX   XXX  X XXX",
    " XXX  XXXX  X XX",
    "  XXX  XXXX XX X",
    "   XXX  XXXX XXX",
)
# The order C3's 60 kernels are stored in (the checkpoint format): each C3 map's inputs,
# maps 0-15, the cyclic groups starting at the map's own index.
C3_INPUTS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5),
)
# The RBF codes (10 x 84 of +1/-1, row d digit d's 7x12 bitmap) as float32 bytes, and
# three rows written out ('#' = +1).
RBF_CODES_SHA256 = "0ac141cc2e8d444a7337bc9c8c46a27701d3426bb576364937a4765c14f9bb81"
RBF_ROWS = {
    0: "..###...#...#.#.....##.....##.....##.....##.....##.....##.....##.....#.#...#...###..",
    1: "...#.....##....#.#......#......#......#......#......#......#......#......#....#####.",
    7: "#######......#.....#......#.....#......#.....#......#.....#......#......#......#....",
}
RBF_LOGIT_SCALE = 0.05

# Each preset's network, as its source describes it: input side and fit, normalisation
# (mean, std of pixel / 255), activation, pooling, C1 padding, C3 wiring, C5 kind and
# whether C5 is squashed, the head.
PAPER_NORMALISATION = (0.1 / 1.275, 1 / 1.275)  # background -0.1, ink 1.175 (Sec. II-A)
TORCHVISION_NORMALISATION = (0.1307, 0.3081)
ARCHITECTURES = {
    "original": dict(size=32, fit="pad", norm=PAPER_NORMALISATION, act="scaled_tanh",
                     pool="trainable", pad=0, c3="table", c5="conv", c5_act=True, head="rbf"),
    "tanh_avgpool": dict(size=32, fit="resize", norm=TORCHVISION_NORMALISATION, act="tanh",
                         pool="avg", pad=0, c3="full", c5="conv", c5_act=True, head="dense"),
    "relu_maxpool": dict(size=32, fit="resize", norm=TORCHVISION_NORMALISATION, act="relu",
                         pool="max", pad=0, c3="full", c5="conv", c5_act=False, head="dense"),
    "sigmoid_maxpool_28": dict(size=28, fit="none", norm=TORCHVISION_NORMALISATION,
                               act="sigmoid", pool="max", pad=0, c3="full", c5="dense",
                               c5_act=True, head="dense"),
    "relu_avgpool_pad2": dict(size=28, fit="none", norm=TORCHVISION_NORMALISATION, act="relu",
                              pool="avg", pad=2, c3="full", c5="dense", c5_act=True,
                              head="dense"),
    "relu_avgpool_pad2_dropout": dict(size=28, fit="none", norm=TORCHVISION_NORMALISATION,
                                      act="relu", pool="avg", pad=2, c3="full", c5="dense",
                                      c5_act=True, head="dense"),
}
DROPOUT = {"relu_avgpool_pad2_dropout": 0.5}

ACTIVATIONS = {
    "scaled_tanh": lambda a: A * np.tanh(S * a),
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
}


def table_i_mask() -> np.ndarray:
    """(6, 16) bool: Table I's X marks."""
    return np.array([[c == "X" for c in row] for row in TABLE_I])


def rbf_codes_digest(codes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(codes, np.float32).tobytes()).hexdigest()


def bilinear_resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) -> (N, size, size): each output pixel centre mapped back to the input,
    (i + 0.5) * H / size - 0.5, clamped to the edge, interpolated linearly in each axis."""
    def along(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        where = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(where).astype(int)
        high = np.minimum(low + 1, n - 1)
        frac = where - low
        shape = [1] * x.ndim
        shape[axis] = size
        return (np.take(x, low, axis) * (1 - frac).reshape(shape)
                + np.take(x, high, axis) * frac.reshape(shape))

    return along(along(images, 1), 2)


def preprocess(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 (N, 28, 28, 1) -> the network's float64 input (N, S, S)."""
    arch = ARCHITECTURES[name]
    x = images[..., 0].astype(np.float64) / 255.0
    if arch["size"] != 28 and arch["fit"] == "pad":
        margin = (arch["size"] - 28) // 2
        x = np.pad(x, ((0, 0), (margin, margin), (margin, margin)))
    elif arch["size"] != 28:
        x = bilinear_resize(x, arch["size"])
    mean, std = arch["norm"]
    return (x - mean) / std


def convolve(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """VALID cross-correlation: x (N, H, W, C), kernel (k, k, C, O) -> (N, H-k+1, W-k+1, O)."""
    k = kernel.shape[0]
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + h, j:j + w, :], kernel[i, j])
    return out + bias


def windows_2x2(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H/2, W/2, C, 4): each non-overlapping 2x2 window's four values."""
    return np.stack([x[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)], axis=-1)


def forward(params: dict, images: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """Every layer's output (maps NHWC) and the logits, for uint8 (N, 28, 28, 1) images."""
    arch = ARCHITECTURES[name]
    p = {layer: {k: np.asarray(v, np.float64) for k, v in leaves.items()}
         for layer, leaves in params.items()}
    f = ACTIVATIONS[arch["act"]]
    out = {"input": preprocess(images, name)}

    def pool(x: np.ndarray, layer: str) -> np.ndarray:
        win = windows_2x2(x)
        if arch["pool"] == "max":
            return win.max(-1)
        if arch["pool"] == "avg":
            return win.mean(-1)
        # The paper's subsampling unit: sum of four, times a coefficient, plus a bias,
        # squashed.
        return f(win.sum(-1) * p[layer]["coefficient"] + p[layer]["bias"])

    x = out["input"][..., None]
    x = np.pad(x, ((0, 0), (arch["pad"],) * 2, (arch["pad"],) * 2, (0, 0)))
    out["C1"] = f(convolve(x, p["C1"]["kernel"], p["C1"]["bias"]))
    out["S2"] = pool(out["C1"], "S2")
    if arch["c3"] == "table":
        kernel = np.zeros((5, 5, 6, 16))
        stored = iter(range(60))
        for j, inputs in enumerate(C3_INPUTS):
            for i in inputs:
                kernel[:, :, i, j] = p["C3"]["kernel"][:, :, next(stored)]
        c3 = convolve(out["S2"], kernel, p["C3"]["bias"])
    else:
        c3 = convolve(out["S2"], p["C3"]["kernel"], p["C3"]["bias"])
    out["C3"] = f(c3)
    out["S4"] = pool(out["C3"], "S4")
    if arch["c5"] == "conv":
        c5 = convolve(out["S4"], p["C5"]["kernel"], p["C5"]["bias"]).reshape(len(images), -1)
    else:
        c5 = out["S4"].reshape(len(images), -1) @ p["C5"]["kernel"] + p["C5"]["bias"]
    out["C5"] = f(c5) if arch["c5_act"] else c5
    out["F6"] = f(out["C5"] @ p["F6"]["kernel"] + p["F6"]["bias"])
    if arch["head"] == "rbf":
        out["squared_distance"] = ((out["F6"][:, None, :] - _codes()[None]) ** 2).sum(-1)
        out["logits"] = -RBF_LOGIT_SCALE * out["squared_distance"]
    else:
        out["logits"] = out["F6"] @ p["OUTPUT"]["kernel"] + p["OUTPUT"]["bias"]
    return out


_CODES: list[np.ndarray] = []


def use_codes(codes: np.ndarray) -> None:
    """Hand the reference the RBF codes once they have been checked against
    ``RBF_CODES_SHA256`` and ``RBF_ROWS`` (the 84-value rows are too long to write out
    whole here)."""
    if rbf_codes_digest(codes) != RBF_CODES_SHA256:
        raise AssertionError("the RBF codes are not the recorded ones")
    for digit, row in RBF_ROWS.items():
        if "".join("#" if v > 0 else "." for v in codes[digit]) != row:
            raise AssertionError(f"RBF code {digit} is not the recorded one")
    _CODES[:] = [np.asarray(codes, np.float64)]


def _codes() -> np.ndarray:
    if not _CODES:
        raise AssertionError("call reference.use_codes first")
    return _CODES[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    cm = np.zeros((classes, classes), int)
    for t, p in zip(labels, predictions, strict=True):
        cm[t, p] += 1
    return cm


def precision_recall_f1(labels: np.ndarray, predictions: np.ndarray, k: int) -> tuple:
    """Class k's precision, recall and F1 = their harmonic mean (0 where undefined)."""
    tp = np.sum((labels == k) & (predictions == k))
    predicted, actual = np.sum(predictions == k), np.sum(labels == k)
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
