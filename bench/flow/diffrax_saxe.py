#!/usr/bin/env python3
"""The gradient flow of bench/flow/saxe.traj with diffrax, beside `traj run`.

usage: python3 bench/flow/diffrax_saxe.py [TRAJ_BINARY]      (pip install jax diffrax)

Runs `traj run bench/flow/saxe.traj --time 0` for the initial params (so both start from
the same W1, W2), solves dθ/dt = −∇L(θ) from t = 0 to 20 with diffrax's Dopri5 and a PID
controller at rtol 1e-8, atol 1e-10, saving at the 201 times 0, 0.1, ..., 20, then times
the whole `traj run` process on the same problem (best of 5). Prints one JSON line per
implementation: compile_s, solve_s (process_s for traj), accepted and rejected steps,
final loss.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import diffrax  # noqa: E402

jax.config.update("jax_enable_x64", True)
HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "saxe.traj")


def traj_run(binary, out, *extra):
    subprocess.run([binary, "run", PROGRAM, "--out", out, "--force", *extra],
                   check=True, capture_output=True)
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../target/release/traj")
    tmp = tempfile.mkdtemp(prefix="traj-flow-bench-")
    traj_run(binary, os.path.join(tmp, "init"), "--time", "0")
    w1 = jnp.asarray(np.load(os.path.join(tmp, "init/params/W1.npy")))
    w2 = jnp.asarray(np.load(os.path.join(tmp, "init/params/W2.npy")))
    m = jnp.diag(jnp.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0, 0.0]))

    def loss(p):
        return 0.5 * jnp.sum((p[1] @ p[0] - m) ** 2)

    grad = jax.grad(loss)
    term = diffrax.ODETerm(lambda t, p, args: jax.tree_util.tree_map(jnp.negative, grad(p)))
    ts = jnp.linspace(0.0, 20.0, 201)

    @jax.jit
    def solve(p0):
        return diffrax.diffeqsolve(
            term, diffrax.Dopri5(), t0=0.0, t1=20.0, dt0=None, y0=p0,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            saveat=diffrax.SaveAt(ts=ts), max_steps=100_000)

    p0 = (w1, w2)
    t0 = time.perf_counter()
    sol = solve(p0)
    jax.block_until_ready(sol.ys)
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        sol = solve(p0)
        jax.block_until_ready(sol.ys)
        best = min(best, time.perf_counter() - t0)
    final = float(loss((sol.ys[0][-1], sol.ys[1][-1])))
    print(json.dumps({
        "impl": "diffrax", "version": diffrax.__version__, "compile_s": round(compile_s - best, 4),
        "solve_s": round(best, 5), "accepted": int(sol.stats["num_accepted_steps"]),
        "rejected": int(sol.stats["num_rejected_steps"]), "final_loss": final}))

    process = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        info = traj_run(binary, os.path.join(tmp, "flow"))
        process = min(process, time.perf_counter() - t0)
    with open(os.path.join(tmp, "flow/trajectory.csv")) as f:
        final = float(f.read().strip().splitlines()[-1].split(",")[2])
    flow = info["flow"]
    print(json.dumps({
        "impl": "traj", "compile_s": round(info["compile_seconds"], 4),
        "solve_s": round(info["run_seconds"], 5), "process_s": round(process, 4),
        "accepted": flow["accepted_steps"], "rejected": flow["rejected_steps"],
        "gradient_evaluations": flow["gradient_evaluations"], "final_loss": final}))


if __name__ == "__main__":
    main()
