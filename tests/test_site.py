"""The page that needs no server (``lenet-jax site``): its image reader in JavaScript
against ``ink.mnist_digit`` on pictures of other styles (Node.js), the folder in headless
Chromium against the server's answers for the same canvas, and its refusals."""

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, chromium, draw_on_clean_pad, run_cli

from lenet_jax import evaluation, ink, rejection, serve, site

INK_JS = ROOT / "lenet_jax" / "static" / "ink.js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("LENET_JAX_REQUIRE_BROWSER"):
            pytest.fail("no Node.js here: apt-get install nodejs npm")
        pytest.skip("no Node.js here: apt-get install nodejs npm")
    return node


def test_ink_js_reads_pictures_as_ink_py_does(tmp_path):
    """benchmarks/style_sets.py's held-out pictures (digits drawn with any pen, letters in
    handwriting fonts, scribbles, shapes, noise, specks: every branch of the pen's
    normalisation), read by ink.js in Node: the same uint8 digit, pixel for pixel, and the
    same share of its ink in its largest piece (the rule's count of pieces)."""
    from benchmarks import style_sets

    wanted = ("digits drawn, any pen", "letters and symbols", "scribbles", "shapes", "noise",
              "blank with specks")
    cases = []
    for source, (_, pictures) in style_sets.sources("held-out").items():
        if source in wanted:
            for picture, _ in itertools.islice(pictures(), 25):
                gray = evaluation._gray_pixels(style_sets.png(picture), source)
                digit = ink.mnist_digit(gray)
                cases.append({"source": source, "shape": gray.shape, "gray": gray.ravel().tolist(),
                              "digit": None if digit is None else digit.ravel().tolist(),
                              "piece": None if digit is None
                              else float(rejection.largest_piece(digit[None])[0])})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
const ink = require({json.dumps(str(INK_JS))});
const cases = require({json.dumps(str(tmp_path / "cases.json"))});
console.log(JSON.stringify(cases.map((c) => {{
  const got = ink.mnistDigit(Float32Array.from(c.gray), c.shape[0], c.shape[1]);
  if (got === null) return [null, null];
  return [Array.from(got), ink.largestPiece(got, {rejection.INK_LEVEL})];
}})));
"""
    result = subprocess.run([_node(), "-e", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    differ = [(c["source"], k) for k, (c, (digit, piece)) in enumerate(zip(cases, got, strict=True))
              if digit != c["digit"] or piece != c["piece"]]
    in_pieces = sum(c["piece"] is not None and c["piece"] < 0.9 for c in cases)
    assert len(cases) == 25 * len(wanted) and differ == [] and in_pieces >= 10, differ


def test_site_refuses_a_folder_it_did_not_write_and_rewrites_its_own(tmp_path):
    from lenet_jax import cli

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    result = run_cli("-m", "lenet_jax", "site", "--pretrained", "original", "--out", str(theirs))
    assert result.returncode == cli.EXIT_USAGE and result.stderr == (
        f"lenet-jax site: error: {theirs} is not an empty directory nor one 'lenet-jax site' "
        "wrote; choose another directory\n")
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert (theirs / "notes.txt").read_text() == "mine"

    ours = tmp_path / "ours"
    predictor = evaluation.Predictor.pretrained("original")
    first = site.build(predictor, ours)
    names = sorted(str(p.relative_to(ours)) for p in first)
    assert names == ["index.html", "ink.js", "local.js", "model.json", "model.onnx",
                     "ort/ort-wasm-simd-threaded.wasm", "ort/ort.wasm.bundle.min.mjs"]
    assert site.build(predictor, ours) == first  # its own folder: written again
    page = (ours / "index.html").read_text()
    assert '<script src="ink.js"></script>' in page and site.HOOK not in page
    card = json.loads((ours / "model.json").read_text())
    assert card["card"] == serve.model_card(predictor) and card["rule"]["kind"] == "energy"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_site_without_npm_says_what_to_install(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python")
    env = dict(os.environ, PATH=str(bare), LENET_JAX_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "lenet_jax", "site", "--pretrained",
                             "original", "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr == (
        f"lenet-jax site: error: npm is needed once, to fetch {site.ORT_PACKAGE} "
        f"{site.ORT_VERSION} (apt-get install npm, or Node.js from nodejs.org)\n")
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_static_site_in_chromium_answers_as_the_server_does(tmp_path):
    """The folder served by ``python -m http.server``, each digit drawn with the mouse large
    and small: the page's top-1, probabilities (within 1e-3) and verdict are the server's
    for the same canvas, and every map is drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from benchmarks.style_sets import DIGIT_STROKES

    predictor = evaluation.Predictor.pretrained("original")
    folder = tmp_path / "site"
    written = site.build(predictor, folder)
    size = sum(p.stat().st_size for p in written)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "-d", str(folder)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    browser = chromium()
    compared, misreads, answered = [], [], 0
    try:
        for _ in range(100):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 60).until(
            lambda d: d.find_element(By.ID, "model").get_attribute("data-preset") == "original")
        ready_ms = browser.execute_script("return performance.now()")
        for digit, strokes in DIGIT_STROKES.items():
            for side, (left, top) in ((200, (50, 40)), (60, (180, 190))):
                title, answered = draw_on_clean_pad(browser, strokes, side, left, top, answered)
                if not compared:
                    first_answer_ms = browser.execute_script("return performance.now()")
                assert browser.find_element(By.ID, "error").text == ""
                png = base64.b64decode(browser.execute_script(
                    "return document.getElementById('pad').toDataURL('image/png')"
                    ".split(',')[1]"))
                shown = {row.get_attribute("data-class"): float(row.get_attribute(
                    "data-probability")) for row in browser.find_elements(By.CSS_SELECTOR,
                                                                         "#bars .bar")}
                want = serve.prediction(predictor, png)
                page = np.array([shown[name] for name in want["class_names"]])
                gap = float(np.abs(page - np.array(want["probabilities"])).max())
                top = max(shown, key=shown.get)
                compared.append((digit, side, top, want["top3"][0]["class"], gap))
                assert top == want["top3"][0]["class"] and gap <= 1e-3, compared[-1]
                assert title == (want["text"] if want["rejected"] else top), (title, want)
                if title != str(digit):
                    misreads.append((digit, side, title))
        counts = {layer.get_attribute("data-layer"): len(layer.find_elements(By.TAG_NAME,
                                                                              "canvas"))
                  for layer in browser.find_elements(By.CSS_SELECTOR, "#maps .layer")}
        assert counts == {"input": 1, "C1": 6, "S2": 6, "C3": 16, "S4": 16, "F6": 2}
        browser.save_screenshot(str(tmp_path / "site.png"))
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)
    print(f"site: {len(written)} files, {size / 2**20:.1f} MiB; model ready "
          f"{ready_ms / 1000:.2f} s after the page began loading, first answer at "
          f"{first_answer_ms / 1000:.2f} s (after drawing the first digit); 20 drawings: "
          f"largest probability gap {max(c[4] for c in compared):.2e}; misread {misreads}")
    print(compared)
    assert len(compared) == 20 and len(misreads) <= 1, misreads


def test_ink_js_thins_as_scikit_image_does():
    """ink.js's neighbourhood table, run as scikit-image's skeletonize runs it, gives
    skeletonize's skeleton of 3,000 random blobs on every pixel."""
    result = run_cli("benchmarks/skeleton_table.py", "--check")
    assert (result.returncode, result.stdout) == (
        0, "ink.js's table: 0 of 1200000 pixels unlike skeletonize's\n"), result.stderr
