"""Do the tests catch a broken property? Apply each deliberate break in
``benchmarks/mutants.toml`` to a temporary copy of this checkout, run the tests that
protect it there, and say whether they caught it.

    python benchmarks/mutants.py                 # every mutation, 2 at a time
    python benchmarks/mutants.py --only "F1"     # those whose property contains "F1"

First the listed tests run on an unchanged copy (they must pass, or a failure would mean
nothing); then one line per mutation, ``killed`` (by which test) or ``survived``, and
``N killed, M survived``. Exit 0 when every mutation was killed, 1 when one survived, 2
when the list no longer fits the code (a text or a test not found) or the unchanged copy
fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = Path(__file__).with_suffix(".toml")
TIMEOUT = 600  # seconds for one mutant's tests


@dataclasses.dataclass(frozen=True)
class Mutation:
    property: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    slow: bool = False
    occurrence: int = 0  # 0: ``find`` must occur exactly once; n: its n-th occurrence

    def apply(self, tree: Path) -> None:
        path = tree / self.file
        source = path.read_text()
        count = source.count(self.find)
        if count == 0 or (count > 1 and not self.occurrence) or self.occurrence > count:
            raise LookupError(f"{self.property!r}: {self.file} has {count} of {self.find!r}")
        at = -1
        for _ in range(self.occurrence or 1):
            at = source.index(self.find, at + 1)
        path.write_text(source[:at] + self.replace + source[at + len(self.find):])


def load(path: Path = MUTATIONS) -> list[Mutation]:
    with open(path, "rb") as file:
        rows = tomllib.load(file)["mutation"]
    return [Mutation(**{**row, "tests": tuple(row["tests"])}) for row in rows]


# Outside a git checkout (an unpacked sdist), what is not source.
NOT_SOURCE = {".venv", ".wheel-venv", "dist", "build", "__pycache__", ".pytest_cache",
              ".ruff_cache", ".hypothesis"}


def checkout_files() -> list[str]:
    """The checkout's files as git sees them: tracked, and new ones not ignored; outside
    a git checkout, every file but environments, builds and caches."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0 or not (ROOT / ".git").exists():
        return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                      if p.is_file() and not NOT_SOURCE & set(p.relative_to(ROOT).parts)
                      and not any(part.endswith(".egg-info") for part in p.parts))
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


def copy_checkout(files: list[str], into: Path) -> Path:
    for name in files:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, into / name)
    return into


def run_tests(tree: Path, tests: tuple[str, ...], slow: bool, env: dict) -> tuple[int, str]:
    """pytest on ``tests`` in ``tree`` (its own lenet_jax first on the path), stopping at
    the first failure: (exit code, the first failing test or the last line)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0",
               "-rf", "--basetemp", str(tree / ".pytest-tmp"), "-m",
               "slow or not slow" if slow else "not slow", *tests]
    try:
        result = subprocess.run(command, cwd=tree, capture_output=True, text=True,
                                timeout=TIMEOUT, env=env | {"PYTHONPATH": str(tree)})
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT} s"
    output = result.stdout + result.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    lines = output.strip().splitlines() or ["no output"]
    return result.returncode, failed[0] if failed else lines[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="mutations whose property contains this")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not first run the tests on an unchanged copy")
    args = parser.parse_args(argv)

    mutations = [m for m in load() if args.only is None or args.only in m.property]
    files = checkout_files()
    scratch = Path(tempfile.mkdtemp(prefix="lenet-jax-mutants-"))
    # One compilation cache for every copy: a program compiled for the unchanged code is
    # reused by the mutants that leave it alone (the cache is keyed by the program).
    env = dict(os.environ, LENET_JAX_COMPILATION_CACHE=str(scratch / "xla"),
               PYTHONDONTWRITEBYTECODE="1")
    try:
        for mutation in mutations:  # every text must still be there before anything runs
            try:
                mutation.apply(copy_checkout([mutation.file], scratch / "check"))
            except LookupError as err:
                print(f"mutants.py: error: {err}; update {MUTATIONS.name}", file=sys.stderr)
                return 2
        if not args.skip_baseline:
            baseline = copy_checkout(files, scratch / "baseline")
            for slow in (False, True):
                tests = tuple(dict.fromkeys(t for m in mutations if m.slow == slow
                                            for t in m.tests))
                if tests:
                    code, last = run_tests(baseline, tests, slow, env)
                    if code != 0:
                        print(f"mutants.py: error: the unchanged tests fail ({last})",
                              file=sys.stderr)
                        return 2
            print(f"baseline: the {sum(len(m.tests) for m in mutations)} listed tests pass "
                  "unchanged", flush=True)

        def test(index: int, mutation: Mutation) -> tuple[Mutation, str, str, float]:
            tree = copy_checkout(files, scratch / f"mutant-{index}")
            mutation.apply(tree)
            start = time.perf_counter()
            code, detail = run_tests(tree, mutation.tests, mutation.slow, env)
            shutil.rmtree(tree, ignore_errors=True)
            # 1: a test failed; 2: collection failed (the break made a module unusable);
            # 4 and 5: the list names tests that are not there or do not run.
            outcome = {0: "survived", 4: "error", 5: "error"}.get(code, "killed")
            return mutation, outcome, detail, time.perf_counter() - start

        killed = survived = errors = 0
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for mutation, outcome, detail, seconds in pool.map(test, range(len(mutations)),
                                                               mutations):
                killed += outcome == "killed"
                survived += outcome == "survived"
                errors += outcome == "error"
                by = f"by {detail}" if outcome == "killed" else f"({detail})"
                print(f"{outcome:8s} {mutation.property} [{mutation.file}] {by} "
                      f"{seconds:.0f}s", flush=True)
        print(f"{killed} killed, {survived} survived"
              + (f", {errors} whose tests did not run" if errors else ""))
        return 2 if errors else 1 if survived else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
