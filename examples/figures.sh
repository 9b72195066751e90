#!/usr/bin/env bash
# Regenerates examples/figures/NAME.png: runs (or sweeps) each example with the release
# build and draws it with `traj plot`, as its header's "Plot:" line suggests.
# usage: bash examples/figures.sh          (from anywhere; builds traj first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
traj=$PWD/target/release/traj
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# name | run or sweep | plot arguments
while IFS='|' read -r name how args; do
  [ -n "$name" ] || continue
  "$traj" "$how" "examples/$name.traj" --out "$work/$name" > /dev/null
  # shellcheck disable=SC2086
  "$traj" plot "$work/$name" $args -o "examples/figures/$name.png"
done <<'TABLE'
balancedness|run|imb imb0 --logx
deep_matrix_completion|sweep|test --logy
diagonal_sparse|sweep|l1 --against α
edge_of_stability|run|sharpness limit
implicit_acceleration|run|lin depth2 depth3 --logy
langevin_double_well|sweep|frac_right
lazy_vs_rich|sweep|moved ntk_change --against α
logistic_max_margin|run|margin wn --logx
optimizers|sweep|quad --logy
random_labels|run|train_true train_rand test_true test_rand --logx
saxe_flow|run|mode
saxe_modes|run|mode --logx
subgradients|run|a b c wn --logx
teacher_student|run|loss test --logx --logy
TABLE
