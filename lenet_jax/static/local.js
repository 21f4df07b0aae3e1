// The page's answers computed in the browser, for the folder `lenet-jax site` writes: the
// canvas read by ink.js (ink.mnist_digit), the network run by ONNX Runtime Web on
// model.onnx, and the "not a digit" rule of model.json as lenet_jax/rejection.py applies
// it (its count of the ink's pieces is ink.js's largestPiece). The answer has the shape of
// lenet_jax.serve.prediction's, so the page shows either.
"use strict";
(function () {
  const ready = (async () => {
    const ort = await import("./ort/ort.wasm.bundle.min.mjs");
    ort.env.wasm.numThreads = 1;  // no cross-origin isolation needed: any static host
    // the .wasm is found beside the module (ort/); its loader is inside the bundle
    const [model, session] = await Promise.all([
      fetch("model.json").then((reply) => reply.json()),
      ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] }),
    ]);
    return { ort, model, session };
  })();

  class Refusal extends Error {}

  // Pillow's "L" of an opaque RGBA pixel (ITU-R 601-2 luma, in its fixed point).
  function grayLevels(canvas) {
    const { width, height } = canvas;
    const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const gray = new Float32Array(width * height);
    for (let i = 0; i < gray.length; i++) {
      gray[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
    }
    return gray;
  }

  function logSumExp(values) {
    const top = Math.max(...values);
    return top + Math.log(values.reduce((sum, v) => sum + Math.exp(v - top), 0));
  }

  // Each map's mean and standard deviation, layer by layer (rejection.map_statistics).
  function statistics(outputs, layers) {
    const out = [];
    for (const layer of layers) {
      const [, maps, h, w] = outputs[layer].dims, data = outputs[layer].data, size = h * w;
      const means = [], stds = [];
      for (let m = 0; m < maps; m++) {
        const map = data.subarray(m * size, (m + 1) * size);
        const mean = map.reduce((sum, v) => sum + v, 0) / size;
        means.push(mean);
        stds.push(Math.sqrt(map.reduce((sum, v) => sum + (v - mean) ** 2, 0) / size));
      }
      out.push(...means, ...stds);
    }
    return out;
  }

  // rejection.Rule.rejects for one picture.
  function rejects(rule, logits, outputs, layers, digit) {
    if (rule === null) return null;
    if (rule.kind === "energy") {
      const free = -logSumExp(logits);
      return free > rule.threshold || Math.exp(Math.max(...logits) - logSumExp(logits)) < rule.confidence
        || (rule.whole > 0 && LenetInk.largestPiece(digit, rule.ink_level) < rule.whole);
    }
    if (rule.kind === "rubbish_class") {
      const both = [-rule.rubbish, ...logits.map((v) => v / rule.logit_scale)];
      return Math.exp(-rule.rubbish - logSumExp(both)) > rule.threshold;
    }
    const s = statistics(outputs, layers);
    const distances = rule.means.map((mean) => {
      const d = s.map((v, i) => v - mean[i]);
      return d.reduce((sum, di, i) => sum + di * rule.precision[i].reduce((t, p, j) => t + p * d[j], 0), 0);
    });
    return Math.min(...distances) > rule.threshold;
  }

  const rounded = (v) => Math.round(v * 1e4) / 1e4;

  // A flat NCHW tensor's first image as maps x rows x columns.
  function stack(tensor) {
    const [, maps, h, w] = tensor.dims, out = [];
    for (let m = 0; m < maps; m++) {
      const rows = [];
      for (let r = 0; r < h; r++) rows.push(Array.from(tensor.data.subarray((m * h + r) * w, (m * h + r + 1) * w), rounded));
      out.push(rows);
    }
    return out;
  }

  const grid = (values, columns) => Array.from({ length: values.length / columns },
    (_, r) => Array.from(values.slice(r * columns, (r + 1) * columns), rounded));

  async function predict(canvas) {
    const { ort, model, session } = await ready;
    const digit = LenetInk.mnistDigit(grayLevels(canvas), canvas.height, canvas.width);
    if (digit === null) throw new Refusal("the image: no digit found (the image is blank)");
    const outputs = await session.run({ images: new ort.Tensor("uint8", digit, [1, 28, 28, 1]) });
    const logits = Array.from(outputs.logits.data), names = model.class_names;
    const total = logSumExp(logits), probabilities = logits.map((v) => Math.exp(v - total));
    const order = probabilities.map((p, i) => i).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    const top3 = order.slice(0, 3).map((i) => ({ class: names[i], probability: probabilities[i] }));
    const rejected = rejects(model.rule, logits, outputs, model.statistic_layers, digit);
    const text = rejected
      ? `not a digit (closest: ${top3[0].class}, ${(100 * top3[0].probability).toFixed(0)}%)`
      : top3.map((t) => `${t.class} ${(100 * t.probability).toFixed(1)}%`).join(", ");
    const f6 = Array.from(outputs.F6.data), codes = model.rbf_codes;
    const maps = {};
    for (const layer of ["C1", "S2", "C3", "S4"]) maps[layer] = stack(outputs[layer]);
    return {
      top3, rejected, text, maps,
      input: stack(outputs.input)[0],
      F6: codes ? grid(f6, 7) : f6.map(rounded),
      code: codes ? { class: names[order[0]], bitmap: grid(codes[order[0]], 7) } : null,
      probabilities: probabilities.map(rounded),
      class_names: names,
    };
  }

  window.lenetBackend = {
    card: async () => (await ready).model.card,
    predict,
    refusal: (err) => (err instanceof Refusal ? err.message : null),
    failure: (err) => `The model could not run in this browser: ${err && err.message ? err.message : err}`,
  };
})();
