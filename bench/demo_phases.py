"""A new user's first run, phase by phase: `make demo` in a fresh clone, then the quick-start again.

    python bench/demo_phases.py                  # fresh clone of this repo: install, import, train, answer, report
    python bench/demo_phases.py --imported-only  # only the quick-start with the default model already imported

The fresh run clones the repo (`git clone`, so committed work only) into a temp dir and runs
`make install` and then `make demo` there with an empty model store (TUNELAB_HOME in the temp dir),
so the embedded model is imported as on a new machine; pip keeps its own wheel cache, as a user's
would. The quick-start's phases come from its own closing line (`phases: import ..., total ...`).
Then the quick-start runs once more in the clone, the model now imported: the ≤90 s case.
Prints one table, the load average and the exact commands. Issue 14's targets (quiet 2-core
machine): `make demo` with install ≤5 minutes; quick-start with the model imported ≤90 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("import", "train", "answer", "report")
_PHASE_LINE = re.compile(r"^phases: (.*)$", re.MULTILINE)


def parse_duration(text: str) -> float:
    """'4.2s' / '1m05s' / '1h02m05s' (tunelab.numbers.format_duration) -> seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    h, mins, s = m.groups()
    return int(h or 0) * 3600 + int(mins or 0) * 60 + float(s)


def parse_phases(output: str) -> dict[str, float]:
    """The quick-start's 'phases: name 1.2s, ...' line -> {name: seconds}."""
    found = _PHASE_LINE.findall(output)
    if not found:
        raise SystemExit("the quick-start printed no 'phases:' line; its output ended:\n" + output[-3000:])
    pairs = (part.rsplit(" ", 1) for part in found[-1].split(", "))
    return {name: parse_duration(value) for name, value in pairs}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run `cmd`, echoing its output; (wall seconds, output). A failure stops the bench."""
    print(f"$ (cd {cwd} && {' '.join(cmd)})", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - start
    sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(cmd)}")
    return seconds, proc.stdout


def fresh_clone(repo: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    """Clone, install, `make demo`: seconds for clone, install and each quick-start phase."""
    clone = work / "clone"
    clone_s, _ = timed(["git", "clone", "-q", str(repo), str(clone)], work, env)
    install_s, _ = timed(["make", "install"], clone, env)
    demo_s, out = timed(["make", "demo"], clone, env)
    return {"clone": clone_s, "install": install_s, **parse_phases(out), "make demo (after install)": demo_s}


def imported(cwd: Path, tunelab: Path, env: dict[str, str], output: Path) -> dict[str, float]:
    """The quick-start with the default model already in the store."""
    seconds, out = timed([str(tunelab), "quickstart", f"output={output}"], cwd, env)
    return {**parse_phases(out), "command": seconds}


def print_table(columns: dict[str, dict[str, float]]) -> None:
    rows = list(dict.fromkeys(k for col in columns.values() for k in col))
    print("\n| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{col[row]:.1f} s" if row in col else "" for col in columns.values()]
        print(f"| {row} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=ROOT, help="repository to clone (default: this one)")
    p.add_argument("--imported-only", action="store_true",
                   help="skip the fresh clone: time only the quick-start here, with the model store as it is")
    args = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="demo-phases-") as tmp:
        work, env = Path(tmp), dict(os.environ)
        if args.imported_only:
            columns["quick-start, model imported"] = imported(ROOT, ROOT / ".venv/bin/tunelab", env, work / "qs")
        else:
            env["TUNELAB_HOME"] = str(work / "home")  # an empty store: the import runs as on a new machine
            env.pop("VIRTUAL_ENV", None)
            fresh = fresh_clone(args.repo, work, env)
            fresh["make demo, install included"] = fresh["install"] + fresh["make demo (after install)"]
            columns["fresh clone"] = fresh
            columns["quick-start, model imported"] = imported(work / "clone", work / "clone/.venv/bin/tunelab",
                                                            env, work / "qs-again")
    print_table(columns)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
