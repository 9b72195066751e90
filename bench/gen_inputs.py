#!/usr/bin/env python3
"""Write the inputs of the reference cases (CASES.md) as .npy files, with traj itself.

usage: python3 bench/gen_inputs.py [--traj PATH] [OUT_DIR]

Each bench/gen_inputs/CASE.traj draws one case's data and initial parameters from traj's
seeded random stream as params, trains nothing, and saves them in its run folder; this
script copies them to OUT_DIR/CASE/NAME.npy (default bench/inputs, where bench/CASE.traj
loads them). traj, JAX and PyTorch then start from the same bits. Params are float, so
the int inputs (INT_INPUTS: mlp's class labels) are drawn as integral floats and written
here as int64. No Python package is needed; traj defaults to target/release/traj (cargo
build --release).
"""
import argparse
import ast
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ["dln", "logreg", "dmf", "relu2", "wide", "sgd", "tanh", "mlp"]
# (case, input) drawn as a float param with integral values, written as int64
INT_INPUTS = {("mlp", "labels")}


def float_npy_to_int64(src, dest):
    """Copy the float64 .npy `src` to `dest` as int64 (every value must be integral)."""
    with open(src, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        sys.exit(f"{src}: not a .npy file")
    if raw[6] == 1:
        (size,), start = struct.unpack("<H", raw[8:10]), 10
    else:
        (size,), start = struct.unpack("<I", raw[8:12]), 12
    header = ast.literal_eval(raw[start:start + size].decode("latin1"))
    if header["descr"] != "<f8" or header["fortran_order"]:
        sys.exit(f"{src}: expected little-endian float64 in C order, found {header}")
    body = raw[start + size:]
    values = struct.unpack(f"<{len(body) // 8}d", body)
    if any(v != int(v) for v in values):
        sys.exit(f"{src}: a value is not an integer")
    text = f"{{'descr': '<i8', 'fortran_order': False, 'shape': {tuple(header['shape'])}, }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    with open(dest, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1"))
        f.write(struct.pack(f"<{len(values)}q", *(int(v) for v in values)))


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
                if (case, name[:-4]) in INT_INPUTS:
                    float_npy_to_int64(os.path.join(params, name), os.path.join(dest, name))
                else:
                    shutil.copy(os.path.join(params, name), os.path.join(dest, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traj", default=os.path.join(HERE, "..", "target", "release", "traj"))
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "inputs"))
    args = ap.parse_args()
    generate(args.traj, args.out)


if __name__ == "__main__":
    main()
