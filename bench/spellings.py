#!/usr/bin/env python3
"""The spelling benchmark: each case of `bench/spellings/` in two or three equivalent
spellings, as users write them, timed with `traj run`.

    cargo build --release && python3 bench/spellings.py [--repeat 5] [--traj PATH]

Runs the spellings of a case in turn, `--repeat` rounds, and prints a Markdown table:
the whole process's CPU time (user + system, the least over the rounds), the training
loop's wall µs a step (the least over the rounds, from `run.json`), each against the
fastest spelling of its case, and the final loss. A spelling whose CPU time is more than
10 % above its case's fastest is marked and makes the exit status 1 (CPU time, because on
a busy host wall time inflates several-fold and unevenly; the steps are many enough that
the loop dominates the process).
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# case -> [(file in bench/spellings/, the spelling)]
CASES = {
    "square (dln)": [
        ("square_pow", "`sum(R^2)`"),
        ("square_mul", "`sum(R * R)`"),
        ("square_fn", "`sum(square(R))`"),
    ],
    "matprod (dln)": [
        ("matprod_builtin", "`matprod(W)`"),
        ("matprod_chain", "`W[3] @ W[2] @ W[1] @ W[0]`"),
    ],
    "softplus (logreg)": [
        ("softplus_fn", "`softplus(z)`"),
        ("softplus_logaddexp", "`logaddexp(z, 0)`"),
        ("softplus_stable", "`max(z, 0) + log1p(exp(-abs(z)))`"),
    ],
}

SLOWER = 1.10


def run_once(traj, program, out):
    """(µs a step of the loop, CPU ms of the process, final loss) of one `traj run`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [traj, "run", str(program), "--out", str(out), "--force"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    meta = json.loads((out / "run.json").read_text())
    with open(out / "trajectory.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return meta["run_seconds"] / meta["steps"] * 1e6, cpu * 1e3, last["loss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traj", default=str(ROOT / "target" / "release" / "traj"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows, slow = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for case, spellings in CASES.items():
            best = {name: [float("inf"), float("inf"), None] for name, _ in spellings}
            for _ in range(args.repeat):
                for name, _ in spellings:
                    us, cpu, loss = run_once(
                        args.traj, HERE / "spellings" / f"{name}.traj", Path(tmp) / name
                    )
                    b = best[name]
                    b[0], b[1], b[2] = min(b[0], us), min(b[1], cpu), loss
            fastest_us = min(b[0] for b in best.values())
            fastest_cpu = min(b[1] for b in best.values())
            for name, spelling in spellings:
                us, cpu, loss = best[name]
                ratio_us, ratio_cpu = us / fastest_us, cpu / fastest_cpu
                mark = ""
                if ratio_cpu > SLOWER:
                    mark, slow = " **slower**", True
                rows.append(
                    f"| {case} | {spelling} | {cpu:.0f} | {ratio_cpu:.2f}{mark} "
                    f"| {us:.2f} | {ratio_us:.2f} | {loss} |"
                )
                case = ""
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"{args.repeat} rounds, the least of each"
    )
    print()
    print(
        "| case | spelling | process CPU ms | × fastest | loop wall µs/step | × fastest "
        "| final loss |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    sys.exit(1 if slow else 0)


if __name__ == "__main__":
    main()
