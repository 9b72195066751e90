#!/usr/bin/env python3
"""Write the inputs of the reference cases (CASES.md) as .npy files, with traj itself.

usage: python3 bench/gen_inputs.py [--traj PATH] [OUT_DIR]

Each bench/gen_inputs/CASE.traj draws one case's data and initial parameters from traj's
seeded random stream as params, trains nothing, and saves them in its run folder; this
script copies them to OUT_DIR/CASE/NAME.npy (default bench/inputs, where bench/CASE.traj
loads them). traj, JAX and PyTorch then start from the same bits. No Python package is
needed; traj defaults to target/release/traj (cargo build --release).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ["dln", "logreg", "dmf", "relu2", "wide", "sgd"]


def generate(traj, out):
    if not os.path.exists(traj):
        sys.exit(f"{traj} is missing: build it with `cargo build --release` (or pass --traj)")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            run_dir = os.path.join(tmp, case)
            program = os.path.join(HERE, "gen_inputs", case + ".traj")
            done = subprocess.run([traj, "run", program, "--out", run_dir], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{program}: traj failed:\n{done.stderr}")
            dest = os.path.join(out, case)
            os.makedirs(dest, exist_ok=True)
            params = os.path.join(run_dir, "params")
            for name in sorted(os.listdir(params)):
                shutil.copy(os.path.join(params, name), os.path.join(dest, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traj", default=os.path.join(HERE, "..", "target", "release", "traj"))
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "inputs"))
    args = ap.parse_args()
    generate(args.traj, args.out)


if __name__ == "__main__":
    main()
