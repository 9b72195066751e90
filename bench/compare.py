#!/usr/bin/env python3
"""Side-by-side timings of the reference cases (bench/CASES.md): traj and its JAX and
PyTorch peers (bench/peers/), in one invocation on this machine.

usage: python3 bench/compare.py [--traj PATH] [--backend NAME] [CASE ...]

Builds nothing: run `cargo build --release` first. Writes the inputs into bench/inputs
with traj (bench/gen_inputs.py), runs `traj run bench/CASE.traj` and the peers that are
installed (`pip install jax` for JAX, `pip install torch numpy` for PyTorch; a missing one
is named with what to install, and its columns stay empty), and prints µs/step, compile
seconds and final loss per implementation, with traj's µs/step as a fraction of JAX's and
the wall time of the whole `traj run` process (parse, compile, train, write).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_inputs import CASES, generate  # noqa: E402

# peer script -> (the module it needs, what to install)
PEERS = {"run_jax.py": ("jax", "pip install jax"), "run_torch.py": ("torch", "pip install torch numpy")}


def traj_case(traj, backend, case, out_root):
    out = os.path.join(out_root, case)
    cmd = [traj, "run", os.path.join(HERE, case + ".traj"), "--out", out]
    if backend:
        cmd += ["--backend", backend]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    process_s = time.perf_counter() - start
    with open(os.path.join(out, "run.json")) as f:
        info = json.load(f)
    with open(os.path.join(out, "trajectory.csv")) as f:
        last = f.read().strip().splitlines()[-1].split(",")
    return {
        "compile_s": info["compile_seconds"],
        "process_s": process_s,
        "us_per_step": info["run_seconds"] / max(info["steps"], 1) * 1e6,
        "final_loss": float(last[1]),
    }


def peer(runner, inputs, cases):
    module, install = PEERS[runner]
    if importlib.util.find_spec(module) is None:
        print(f"# {runner}: {module} is not installed; `{install}` to compare with it", file=sys.stderr)
        return {}
    path = os.path.join(HERE, "peers", runner)
    try:
        res = subprocess.run([sys.executable, path, inputs] + cases, check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"# {runner} unavailable: {getattr(e, 'stderr', e)!s:.200}", file=sys.stderr)
        return {}
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return {r["case"]: r for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traj", default=os.path.join(HERE, "..", "target", "release", "traj"))
    ap.add_argument("--backend", default=None)
    ap.add_argument("cases", nargs="*", default=CASES)
    args = ap.parse_args()
    inputs = os.path.join(HERE, "inputs")
    generate(args.traj, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        ours = {c: traj_case(args.traj, args.backend, c, tmp) for c in args.cases}
    jax = peer("run_jax.py", inputs, args.cases)
    torch = peer("run_torch.py", inputs, args.cases)
    head = f"{'case':8} {'traj us/step':>13} {'JAX us/step':>12} {'torch us/step':>14} {'traj/JAX':>9} {'traj compile s':>15} {'JAX compile s':>14} {'traj process s':>15}  final loss traj | JAX"
    print(head)
    for c in args.cases:
        t, j, p = ours[c], jax.get(c, {}), torch.get(c, {})
        ratio = t["us_per_step"] / j["us_per_step"] if j else float("nan")
        print(
            f"{c:8} {t['us_per_step']:13.2f} {j.get('us_per_step', float('nan')):12.2f} "
            f"{p.get('us_per_step', float('nan')):14.1f} {ratio:9.2f} {t['compile_s']:15.3f} "
            f"{j.get('compile_s', float('nan')):14.3f} {t['process_s']:15.3f}  {t['final_loss']:.16g} | {j.get('final_loss', float('nan')):.16g}"
        )


if __name__ == "__main__":
    main()
