#!/usr/bin/env python3
"""Mutation check: do the tests notice when the code is broken on purpose? (issue 17)

Reads the curated mutants of ``tests/mutants.toml``; for each one it changes one piece
of text in a temporary copy of the repository (``src/``, ``tests/`` without the
browser tests, ``pyproject.toml``), runs that mutant's tests there with
``-x -q -p no:randomly`` and ``PYTHONPATH`` pointing at the copy's ``src``, and counts
the mutant *killed* when pytest fails. The working tree is never written, even when
this script is killed; the copy lives in a temporary folder that is removed at the end.

Before the mutants, the tests they name run once on the unchanged copy (the baseline):
a test that fails without any mutant would "kill" every mutant and prove nothing.

Exit status: 0 when every mutant was killed, 1 when one survived or was invalid (its
original text not found exactly once, or pytest found no tests / bad arguments),
2 when the baseline failed. Usage::

    bash scripts/mutation-check.sh                      # every mutant (minutes)
    bash scripts/mutation-check.sh --only name1,name2   # chosen mutants
    bash scripts/mutation-check.sh --list               # names, and whether each applies
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tests" / "mutants.toml"
FIELDS = ("name", "kind", "file", "original", "replacement", "tests")
PYTEST_ARGS = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
# pytest exit codes that mean "the tests ran and one failed" (1), or the mutant broke
# collection or pytest itself (2, 3); 4 (usage error) and 5 (no tests) prove nothing.
KILLING_CODES = {1, 2, 3}


def load_mutants(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        table = tomllib.load(fh)
    mutants = table.get("mutant", [])
    names = set()
    for i, m in enumerate(mutants):
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise SystemExit(f"{path}: mutant {i + 1} ({m.get('name', '?')}) lacks {', '.join(missing)}")
        if not isinstance(m["tests"], list) or not m["tests"]:
            raise SystemExit(f"{path}: mutant {m['name']} names no tests")
        if m["name"] in names:
            raise SystemExit(f"{path}: two mutants are called {m['name']}")
        if m["original"] == m["replacement"]:
            raise SystemExit(f"{path}: mutant {m['name']} changes nothing")
        names.add(m["name"])
    return mutants


def static_problem(m: dict) -> str | None:
    """Why a mutant cannot be applied as written (``None`` if it can)."""
    path = ROOT / m["file"]
    if not path.is_file():
        return f"no file {m['file']}"
    found = path.read_text().count(m["original"])
    if found != 1:
        return f"original text found {found} times in {m['file']}"
    files = [t.split("::")[0] for t in m["tests"]]
    missing = [f for f in files if not (ROOT / f).exists()]
    return f"no test file {', '.join(missing)}" if missing else None


def make_copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests",
                    ignore=lambda d, names: set(ignore(d, names)) | ({"browser"} if Path(d).name == "tests" else set()))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no cached bytecode that could outlive a mutant
    return env


class Runner:
    """Runs pytest in the copy; kills the whole process group on timeout or interrupt."""

    def __init__(self, copy: Path, timeout: float):
        self.copy, self.timeout, self.env, self.proc, self.count = copy, timeout, environment(copy), None, 0

    def check_import(self) -> None:
        out = subprocess.run([sys.executable, "-c", "import hrtem_tl; print(hrtem_tl.__file__)"], cwd=self.copy,
                             env=self.env, capture_output=True, text=True, timeout=120)
        where = Path(out.stdout.strip() or "?").resolve()
        if self.copy.resolve() not in where.parents:
            raise SystemExit(f"the copy's package is not the one imported ({where}; {out.stderr.strip()[-300:]})")

    def pytest(self, tests: list[str]) -> tuple[int | None, str, float]:
        """(exit code or None on timeout, output tail, seconds)."""
        self.count += 1
        basetemp = self.copy / f".pytest-tmp-{self.count}"
        cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, f"--basetemp={basetemp}", *tests]
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.copy, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
            code = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.kill()
            out, code = self.proc.communicate()[0] or "", None
        finally:
            self.proc = None
            shutil.rmtree(basetemp, ignore_errors=True)
        return code, out, time.perf_counter() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # pytest and any process it started
            except ProcessLookupError:
                pass


def tail(text: str, lines: int = 6) -> str:
    return "\n".join("      | " + line for line in text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=MUTANTS, help="the mutant list (TOML)")
    parser.add_argument("--only", help="comma-separated mutant names to run")
    parser.add_argument("--limit", type=int, help="run only the first N mutants (after --only)")
    parser.add_argument("--list", action="store_true", help="print the chosen mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unchanged tests")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (a timeout kills)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's last lines for every mutant")
    args = parser.parse_args(argv)

    mutants = load_mutants(args.mutants)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        known = {m["name"] for m in mutants}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise SystemExit(f"unknown mutant(s): {', '.join(unknown)}")
        mutants = [m for m in mutants if m["name"] in wanted]
    if args.limit is not None:
        mutants = mutants[:args.limit]
    if args.list:
        bad = 0
        for m in mutants:
            problem = static_problem(m)
            bad += bool(problem)
            print(f"{m['name']:46} {m['kind']:20} {m['file']}" + (f"  INVALID: {problem}" if problem else ""))
        print(f"{len(mutants)} mutants, {bad} invalid")
        return 1 if bad else 0
    if not mutants:
        raise SystemExit("no mutants chosen")

    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="hrtem-mutants-"))
    runner = Runner(tmp / "repo", args.timeout)

    def interrupted(signum, frame):
        runner.kill()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    killed, total = 0, len(mutants)
    try:
        make_copy(runner.copy)
        runner.check_import()
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in mutants for t in m["tests"]))
            code, out, secs = runner.pytest(tests)
            if code != 0:
                print(f"baseline FAILED (pytest exit {code}, {secs:.0f} s) without any mutant:\n{tail(out, 20)}")
                return 2
            print(f"baseline: the tests of {total} mutants pass unchanged ({secs:.0f} s)")
        for i, m in enumerate(mutants, 1):
            path = runner.copy / m["file"]
            label = f"{i:>3}/{total} {m['name']:46} [{m['kind']}]"
            problem = static_problem(m)
            if problem:
                print(f"{label} INVALID: {problem}")
                continue
            pristine = path.read_text()  # the copy's text: the working tree may change meanwhile
            if pristine.count(m["original"]) != 1:
                print(f"{label} INVALID: the original text changed since the copy was made")
                continue
            path.write_text(pristine.replace(m["original"], m["replacement"]))
            try:
                code, out, secs = runner.pytest(m["tests"])
            finally:
                path.write_text(pristine)  # the copy is whole again before the next mutant
            if code is None:
                status, ok = f"killed (timeout after {args.timeout:.0f} s)", True
            elif code in KILLING_CODES:
                status, ok = "killed", True
            elif code == 0:
                status, ok = "SURVIVED", False
            else:
                status, ok = f"INVALID (pytest exit {code}: no tests ran)", False
            killed += ok
            print(f"{label} {status} ({secs:.0f} s)")
            if args.verbose or not ok:
                print(f"      tests: {' '.join(m['tests'])}")
                print(tail(out))
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        runner.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - start
    print(f"{killed} of {total} mutants killed in {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    return 0 if killed == total else 1


if __name__ == "__main__":
    sys.exit(main())
