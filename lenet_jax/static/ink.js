// A picture's ink as MNIST would have it: lenet_jax/ink.py's mnist_digit, step for step,
// for the page that runs without a server (lenet-jax site). Arrays are Float32Array where
// ink.py's are float32 (each store rounds as NumPy's float32 does) and plain doubles where
// ink.py computes in float64; resizing follows Pillow's two-pass resampling of "F" images.
"use strict";
(function (exports) {
  const MNIST_SIZE = 28, MNIST_BOX = 20, WORK_BOX = 80;
  const PEN = 10.9, WIDTHS = [6.4, 19.0], SOFTNESS = 0.93, INK = 0.5;
  const f32 = Math.fround;

  // Python's round(): halves to even.
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // NumPy's median of a float32 array: the mean of the middle two, in float32.
  function median(values) {
    const sorted = Float32Array.from(values).sort(), n = sorted.length;
    return n % 2 ? sorted[(n - 1) / 2] : f32(f32(sorted[n / 2 - 1] + sorted[n / 2]) / 2);
  }

  const FILTERS = {
    bilinear: { support: 1, at: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
    lanczos: { support: 3, at: (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  };
  function sinc(x) {
    if (x === 0) return 1;
    x *= Math.PI;
    return Math.sin(x) / x;
  }

  // Pillow's precompute_coeffs: for each output pixel, its first input and normalised weights.
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize, filterScale = Math.max(scale, 1);
    const support = filter.support * filterScale, rows = [];
    for (let xx = 0; xx < outSize; xx++) {
      const centre = (xx + 0.5) * scale;
      const first = Math.max(0, Math.trunc(centre - support + 0.5));
      const count = Math.min(inSize, Math.trunc(centre + support + 0.5)) - first;
      const weights = new Float64Array(Math.max(count, 0));
      let total = 0;
      for (let x = 0; x < count; x++) {
        weights[x] = filter.at((x + first - centre + 0.5) / filterScale);
        total += weights[x];
      }
      if (total !== 0) for (let x = 0; x < count; x++) weights[x] /= total;
      rows.push({ first, weights });
    }
    return rows;
  }

  // Image.fromarray(pixels.astype(float32), "F").resize((w, h), filter): horizontal pass,
  // then vertical, each summed in double and stored as float32.
  function resize(pixels, height, width, outH, outW, filter) {
    let image = Float32Array.from(pixels), h = height, w = width;
    if (outW !== w) {
      const taps = coefficients(w, outW, filter), out = new Float32Array(h * outW);
      for (let y = 0; y < h; y++) {
        for (let xx = 0; xx < outW; xx++) {
          const { first, weights } = taps[xx];
          let sum = 0;
          for (let x = 0; x < weights.length; x++) sum += image[y * w + first + x] * weights[x];
          out[y * outW + xx] = sum;
        }
      }
      image = out; w = outW;
    }
    if (outH !== h) {
      const taps = coefficients(h, outH, filter), out = new Float32Array(outH * w);
      for (let yy = 0; yy < outH; yy++) {
        const { first, weights } = taps[yy];
        for (let x = 0; x < w; x++) {
          let sum = 0;
          for (let y = 0; y < weights.length; y++) sum += image[(first + y) * w + x] * weights[y];
          out[yy * w + x] = sum;
        }
      }
      image = out; h = outH;
    }
    return { pixels: image, height: h, width: w };
  }

  // ink.py's _scaled: the size Python's round() gives, at least one pixel a side.
  function scaled(pixels, height, width, scale, filter) {
    const outW = Math.max(1, roundHalfEven(width * scale));
    const outH = Math.max(1, roundHalfEven(height * scale));
    return resize(pixels, height, width, outH, outW, filter);
  }

  // scikit-image's skeletonize (2-D): Zhang and Suen's parallel thinning, a pixel's fate read
  // from a table by its eight neighbours (bits: NW 1, N 2, NE 4, E 8, SE 16, S 32, SW 64,
  // W 128): 1 removed in the first sub-pass, 2 in the second, 3 in both. The table is not the
  // paper's conditions: benchmarks/skeleton_table.py recovers it from scikit-image's outputs.
  const THINNING = ("0001001300311013000000002020303300000000300000000000000020003022" +
    "0000000000000000000000000000000020000000200020003000000030003020" +
    "0031001300000001000000000000000131000000000000002000000000000000" +
    "2313001300000001000000000000000023010001000000003301000022002000").split("").map(Number);

  function skeleton(mask, height, width) {
    const at = (image, r, c) => (r >= 0 && r < height && c >= 0 && c < width ? image[r * width + c] : 0);
    let image = Uint8Array.from(mask, (v) => (v ? 1 : 0)), changed = true;
    while (changed) {
      changed = false;
      for (const pass of [1, 2]) {
        const next = Uint8Array.from(image);
        for (let r = 0; r < height; r++) {
          for (let c = 0; c < width; c++) {
            if (!image[r * width + c]) continue;
            const fate = THINNING[at(image, r - 1, c - 1) + 2 * at(image, r - 1, c) +
              4 * at(image, r - 1, c + 1) + 8 * at(image, r, c + 1) + 16 * at(image, r + 1, c + 1) +
              32 * at(image, r + 1, c) + 64 * at(image, r + 1, c - 1) + 128 * at(image, r, c - 1)];
            if (fate & pass) {
              next[r * width + c] = 0;
              changed = true;
            }
          }
        }
        image = next;
      }
    }
    return image;
  }

  // scipy's distance_transform_edt: each nonzero pixel's exact distance to the nearest zero
  // (Felzenszwalb and Huttenlocher's squared distances, rows then columns).
  function distanceToZero(mask, height, width) {
    const squared = new Float64Array(height * width);
    const line = (values, n) => {  // the lower envelope of the parabolas at finite values
      const out = new Float64Array(n).fill(Infinity), hull = [], edges = [];
      for (let q = 0; q < n; q++) {
        if (values[q] === Infinity) continue;
        let s = -Infinity;
        while (hull.length) {
          const v = hull[hull.length - 1];
          s = (values[q] + q * q - values[v] - v * v) / (2 * q - 2 * v);
          if (s > edges[edges.length - 1]) break;
          hull.pop(); edges.pop(); s = -Infinity;
        }
        hull.push(q); edges.push(s);
      }
      for (let q = 0, j = 0; q < n && hull.length; q++) {
        while (j + 1 < hull.length && edges[j + 1] < q) j++;
        out[q] = (q - hull[j]) ** 2 + values[hull[j]];
      }
      return out;
    };
    for (let c = 0; c < width; c++) {
      const column = new Float64Array(height);
      for (let r = 0; r < height; r++) column[r] = mask[r * width + c] ? Infinity : 0;
      const done = line(column, height);
      for (let r = 0; r < height; r++) squared[r * width + c] = done[r];
    }
    const out = new Float64Array(height * width);
    for (let r = 0; r < height; r++) {
      const done = line(squared.subarray(r * width, (r + 1) * width), width);
      for (let c = 0; c < width; c++) out[r * width + c] = Math.sqrt(done[c]);
    }
    return out;
  }

  // NumPy's sum of a contiguous array: pairwise (blocks of up to 128 in eight running sums),
  // each addition rounded by `round` (f32 for float32 arrays). The order matters: a digit
  // centred on a half pixel moves with it.
  function numpySum(values, round = (x) => x) {
    const pairwise = (at, n) => {
      if (n < 8) {
        let sum = 0;
        for (let i = 0; i < n; i++) sum = round(sum + values[at + i]);
        return sum;
      }
      if (n <= 128) {
        const r = Array.from(values.slice(at, at + 8));
        let i = 8;
        for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = round(r[j] + values[at + i + j]);
        const s = (a, b) => round(a + b);
        let sum = s(s(s(r[0], r[1]), s(r[2], r[3])), s(s(r[4], r[5]), s(r[6], r[7])));
        for (; i < n; i++) sum = round(sum + values[at + i]);
        return sum;
      }
      let half = Math.floor(n / 2);
      half -= half % 8;
      return round(pairwise(at, half) + pairwise(at + half, n - half));
    };
    return pairwise(0, values.length);
  }

  function count(values, test) {
    let n = 0;
    for (const v of values) if (test(v)) n++;
    return n;
  }

  function padded(values, height, width, margin, Type) {
    const w = width + 2 * margin, out = new Type((height + 2 * margin) * w);
    for (let r = 0; r < height; r++) {
      out.set(values.subarray(r * width, (r + 1) * width), (r + margin) * w + margin);
    }
    return out;
  }

  // ink.py's mnist_pen: the ink's contrast stretched, MNIST's pen where its strokes are unlike
  // MNIST's, scaled so its longer side is `box`.
  function mnistPen(ink, height, width, box) {
    let brightest = 0;
    for (const v of ink) brightest = Math.max(brightest, v);
    const gain = f32(255 / Math.max(brightest, 1e-6));
    ink = ink.map((v) => f32(v * gain));
    const big = scaled(ink, height, width, WORK_BOX / Math.max(height, width), FILTERS.bilinear);
    const bh = big.height, bw = big.width;
    const mask = Uint8Array.from(big.pixels, (v) => (v > INK * 255 ? 1 : 0));
    const width_ = count(mask, Boolean) / Math.max(count(skeleton(mask, bh, bw), Boolean), 1);
    const inked = count(big.pixels, (v) => v > f32(0.1 * 255));
    const soft = count(big.pixels, (v) => v > f32(0.1 * 255) && v < f32(0.9 * 255));
    const softness = soft / Math.max(inked, 1);
    if (WIDTHS[0] <= width_ && width_ <= WIDTHS[1] && softness <= SOFTNESS) {
      const out = scaled(ink, height, width, box / Math.max(height, width), FILTERS.lanczos);
      return { ...out, pixels: out.pixels.map((v) => Math.min(255, Math.max(0, v))) };
    }
    const margin = Math.trunc(PEN), ph = bh + 2 * margin, pw = bw + 2 * margin;
    const wide = padded(mask, bh, bw, margin, Uint8Array);
    if (!wide.some(Boolean)) {  // nothing at half the brightest: the brightest pixel
      const bigWide = padded(big.pixels, bh, bw, margin, Float32Array);
      let best = 0;
      for (let i = 1; i < bigWide.length; i++) if (bigWide[i] > bigWide[best]) best = i;
      wide[best] = 1;
    }
    let pen = new Float64Array(ph * pw);
    if (width_ > WIDTHS[1] && softness <= SOFTNESS) {  // too thick: the outline moved in
      const inside = distanceToZero(wide, ph, pw);
      for (let i = 0; i < pen.length; i++) {
        pen[i] = Math.min(1, Math.max(0, inside[i] - 0.5 - (width_ - PEN) / 2 + 0.5)) * 255;
      }
    } else {  // too thin, or soft: the skeleton drawn with MNIST's pen
      const bones = skeleton(wide, ph, pw).map((v) => (v ? 0 : 1));
      const away = distanceToZero(bones, ph, pw);
      for (let i = 0; i < pen.length; i++) {
        pen[i] = Math.min(1, Math.max(0, PEN / 2 + 0.5 - away[i])) * 255;
      }
    }
    if (!pen.some(Boolean)) pen = Float64Array.from(wide, (v) => v * 255);
    const [top, bottom, left, right] = bounds(pen, ph, pw, (v) => v !== 0);
    const h = bottom - top, w = right - left, crop = new Float32Array(h * w);
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) crop[r * w + c] = pen[(top + r) * pw + left + c];
    }
    const out = scaled(crop, h, w, box / Math.max(h, w), FILTERS.lanczos);
    return { ...out, pixels: out.pixels.map((v) => Math.min(255, Math.max(0, v))) };
  }

  // [top, bottom, left, right) of the pixels that pass `test`; null if none does.
  function bounds(values, height, width, test) {
    let top = height, bottom = -1, left = width, right = -1;
    for (let r = 0; r < height; r++) {
      for (let c = 0; c < width; c++) {
        if (!test(values[r * width + c])) continue;
        top = Math.min(top, r); bottom = Math.max(bottom, r);
        left = Math.min(left, c); right = Math.max(right, c);
      }
    }
    return bottom < 0 ? null : [top, bottom + 1, left, right + 1];
  }

  // ink.py's mnist_digit: gray levels (height x width, row-major) of a picture of one digit
  // as MNIST has its digits, a Uint8Array of 28 x 28, white on black; null if it has no ink.
  // Its fill round a turned or framed page (_unfilled) is left out: the pad has none.
  function mnistDigit(gray, height, width) {
    let pixels = Float32Array.from(gray);
    const border = [];
    for (let c = 0; c < width; c++) border.push(pixels[c], pixels[(height - 1) * width + c]);
    for (let r = 0; r < height; r++) border.push(pixels[r * width], pixels[r * width + width - 1]);
    let background = median(border);
    if (background > 127) {
      pixels = pixels.map((v) => 255 - v);
      background = median(border.map((v) => f32(255 - v)));
    }
    pixels = pixels.map((v) => Math.min(255, Math.max(0, v - background)));
    let brightest = 0;
    for (const v of pixels) brightest = Math.max(brightest, v);
    if (brightest <= 0) return null;
    const [top, bottom, left, right] = bounds(pixels, height, width, (v) => v > 0.25 * brightest);
    const h = bottom - top, w = right - left, crop = new Float32Array(h * w);
    for (let r = 0; r < h; r++) crop.set(pixels.subarray((top + r) * width + left, (top + r) * width + right), r * w);
    const digit = mnistPen(crop, h, w, MNIST_BOX);
    // as ink.py: the mass summed in float32, the moments in float64
    const mass = numpySum(digit.pixels, f32);
    const rowMass = numpySum(Float64Array.from(digit.pixels, (v, i) => Math.floor(i / digit.width) * v));
    const colMass = numpySum(Float64Array.from(digit.pixels, (v, i) => (i % digit.width) * v));
    const centreR = mass ? rowMass / mass : digit.height / 2;
    const centreC = mass ? colMass / mass : digit.width / 2;
    const place = (centre, size) =>
      Math.min(MNIST_SIZE - size, Math.max(0, roundHalfEven(MNIST_SIZE / 2 - centre)));
    const y0 = place(centreR, digit.height), x0 = place(centreC, digit.width);
    const field = new Uint8Array(MNIST_SIZE * MNIST_SIZE);
    for (let r = 0; r < digit.height; r++) {
      for (let c = 0; c < digit.width; c++) {
        // astype(uint8) after clipping to [0, 255]: the fraction dropped
        field[(y0 + r) * MNIST_SIZE + x0 + c] = Math.trunc(digit.pixels[r * digit.width + c]);
      }
    }
    return field;
  }

  // rejection.largest_piece for one uint8 digit: the share of its ink (pixels above
  // inkLevel, weighed by their level) its largest 8-connected piece holds.
  function largestPiece(digit, inkLevel) {
    const size = MNIST_SIZE, piece = new Int32Array(size * size), masses = [];
    for (let start = 0; start < piece.length; start++) {
      if (digit[start] <= inkLevel || piece[start]) continue;
      const stack = [start];
      let mass = 0;
      piece[start] = masses.length + 1;
      while (stack.length) {
        const at = stack.pop(), r = Math.floor(at / size), c = at % size;
        mass += digit[at];
        for (let dr = -1; dr <= 1; dr++) {
          for (let dc = -1; dc <= 1; dc++) {
            const rr = r + dr, cc = c + dc, next = rr * size + cc;
            if (rr >= 0 && rr < size && cc >= 0 && cc < size && !piece[next] && digit[next] > inkLevel) {
              piece[next] = masses.length + 1;
              stack.push(next);
            }
          }
        }
      }
      masses.push(mass);
    }
    return masses.length > 1 ? Math.max(...masses) / masses.reduce((sum, m) => sum + m, 0) : 1;
  }

  exports.mnistDigit = mnistDigit;
  exports.largestPiece = largestPiece;
})(typeof module === "object" ? module.exports : (globalThis.LenetInk = {}));
