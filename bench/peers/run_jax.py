#!/usr/bin/env python3
"""Run the reference cases with JAX: the whole training loop jit-compiled (lax.fori_loop),
float64, CPU.

usage: python3 bench/peers/run_jax.py INPUT_DIR [CASE ...]      (pip install jax)
Prints one JSON line per case: case, impl, version, steps, compile_s, run_s (the loop
alone), us_per_step, initial_loss, final_loss.
"""
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES  # noqa: E402


def load(indir, case):
    d = os.path.join(indir, case)
    return {f[:-4]: jnp.asarray(np.load(os.path.join(d, f))) for f in sorted(os.listdir(d))}


def run(indir, name):
    c = CASES[name]
    arrays = load(indir, name)
    params = {k: arrays[v] for k, v in c["params"].items()}
    data = {k: v for k, v in arrays.items() if k not in c["params"].values()}
    lr, steps, loss, batch = c["lr"], c["steps"], c["loss"], c.get("batch")

    def update(p, g):
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)

    if batch is None:
        def train(p):
            return lax.fori_loop(0, steps, lambda _, q: update(q, jax.grad(lambda r: loss(jnp, r, data))(q)), p)
    else:
        n = data["X"].shape[0]

        def step(_, carry):
            p, key = carry
            key, sub = jax.random.split(key)
            idx = jax.random.randint(sub, (batch,), 0, n)
            g = jax.grad(lambda q: loss(jnp, q, data, data["X"][idx], data["y"][idx]))(p)
            return update(p, g), key

        def train(p):
            return lax.fori_loop(0, steps, step, (p, jax.random.PRNGKey(0)))[0]

    full_loss = jax.jit(lambda p: loss(jnp, p, data))
    initial = float(full_loss(params))
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(params).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(params))
    t2 = time.perf_counter()
    return dict(case=name, impl="jax", version=jax.__version__, steps=steps,
                compile_s=round(t1 - t0, 4), run_s=round(t2 - t1, 4),
                us_per_step=round(1e6 * (t2 - t1) / steps, 3),
                initial_loss=initial, final_loss=float(full_loss(out)))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[2:] or list(CASES):
        print(json.dumps(run(sys.argv[1], name)), flush=True)


if __name__ == "__main__":
    main()
