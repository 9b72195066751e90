#!/usr/bin/env python3
"""Write tests/fixtures/jax_final_loss.csv: the final loss JAX reaches on each reference
case, which tests/bench_cases.rs compares traj's against (so `cargo test` needs no Python).

usage: python3 bench/write_jax_fixture.py [--traj PATH]     (pip install jax; build traj)
Rerun it when a case's program, steps, learning rate or input generator changes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_inputs import CASES, generate  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "jax_final_loss.csv")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traj", default=os.path.join(HERE, "..", "target", "release", "traj"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.traj, tmp)
        out = subprocess.run([sys.executable, os.path.join(HERE, "peers", "run_jax.py"), tmp] + CASES,
                             check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    with open(FIXTURE, "w") as f:
        f.write(f"# Final losses of bench/peers/run_jax.py (JAX {rows[0]['version']}, float64, CPU) on the\n")
        f.write("# inputs of bench/gen_inputs.py; written by `python3 bench/write_jax_fixture.py`.\n")
        f.write("case,final_loss\n")
        for r in rows:
            f.write(f"{r['case']},{r['final_loss']!r}\n")
    print(open(FIXTURE).read(), end="")


if __name__ == "__main__":
    main()
