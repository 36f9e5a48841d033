"""Run the quick test subset several times, as CI runs the suite, and fail if any test's outcome differs between runs.

    .venv/bin/python scripts/repeat_tests.py [--runs 3] [-- extra pytest arguments]

A test that passes once and fails once is flaky: it says nothing when it fails and hides a real failure when it
passes. Each run is a fresh pytest process (no cache, its own temp folders); the outcome of every test id (passed,
failed, error, skipped) is read from the run's JUnit XML and compared. Exit 0: every run alike and no failure; 1: a
failure or an outcome that changed (listed); 2: pytest could not run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def outcomes(junit: Path) -> dict[str, str]:
    """test id → passed | failed | error | skipped, from a JUnit XML file."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        name = f"{case.get('classname')}::{case.get('name')}"
        result[name] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(kinds[0], "?") if kinds \
            else "passed"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    args = parser.parse_args()
    runs: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="repeat-tests-") as tmp:
        for i in range(args.runs):
            junit = Path(tmp) / f"run{i}.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *args.pytest_args]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            if not junit.is_file():
                print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
                print(f"run {i + 1}: pytest wrote no report (exit {done.returncode})", file=sys.stderr)
                return 2
            runs.append(outcomes(junit))
            counts = {k: sum(v == k for v in runs[-1].values()) for k in ("passed", "failed", "error", "skipped")}
            print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{v} {k}" for k, v in counts.items()), flush=True)
    names = sorted(set().union(*runs))
    changed = {n: [r.get(n, "absent") for r in runs] for n in names if len({r.get(n, "absent") for r in runs}) > 1}
    failed = sorted(n for n in names if any(r.get(n) in ("failed", "error") for r in runs))
    for name, seen in changed.items():
        print(f"FLAKY {name}: {' / '.join(seen)}")
    for name in failed:
        if name not in changed:
            print(f"FAILED every run: {name}")
    if changed or failed:
        return 1
    print(f"deterministic: {len(names)} tests, the same outcome in all {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
