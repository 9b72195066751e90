#!/usr/bin/env python3
"""Run the reference cases with PyTorch: an eager autograd loop, float64, CPU.

usage: python3 bench/peers/run_torch.py INPUT_DIR [CASE ...]    (pip install torch numpy)
Prints one JSON line per case with the fields of run_jax.py. TORCH_THREADS sets the
thread count (default: every core).
"""
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES  # noqa: E402


def load(indir, case):
    d = os.path.join(indir, case)
    return {f[:-4]: torch.from_numpy(np.load(os.path.join(d, f))) for f in sorted(os.listdir(d))}


def run(indir, name):
    c = CASES[name]
    arrays = load(indir, name)
    params = {k: arrays[v].clone().requires_grad_(True) for k, v in c["params"].items()}
    data = {k: v for k, v in arrays.items() if k not in c["params"].values()}
    lr, steps, loss, batch = c["lr"], c["steps"], c["loss"], c.get("batch")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        initial = float(loss(torch, params, data))
    t0 = time.perf_counter()
    for _ in range(steps):
        if batch is None:
            value = loss(torch, params, data)
        else:
            idx = torch.randint(0, data["X"].shape[0], (batch,), generator=gen)
            value = loss(torch, params, data, data["X"][idx], data["y"][idx])
        grads = torch.autograd.grad(value, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p.sub_(lr * g)
    run_s = time.perf_counter() - t0
    with torch.no_grad():
        final = float(loss(torch, params, data))
    return dict(case=name, impl="torch-eager", version=torch.__version__, steps=steps,
                compile_s=0.0, run_s=round(run_s, 4), us_per_step=round(1e6 * run_s / steps, 3),
                initial_loss=initial, final_loss=final)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", os.cpu_count() or 1)))
    for name in sys.argv[2:] or list(CASES):
        print(json.dumps(run(sys.argv[1], name)), flush=True)


if __name__ == "__main__":
    main()
