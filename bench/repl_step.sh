#!/usr/bin/env bash
# `:step 100000` in `traj repl` against `traj run`'s loop time for the same 100,000 steps
# of bench/logreg.traj (issue 18: within 10 %), REPS times each, interleaved; prints each
# pair and the medians. Not a test: timings on a loaded machine are noisy.
#   bench/repl_step.sh [TRAJ] [REPS]      (inputs: python3 bench/gen_inputs.py)
set -euo pipefail
traj=$(realpath "${1:-target/release/traj}"); reps=${2:-10}
cd "$(dirname "$0")"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
runs=(); repls=()
for ((i = 0; i < reps; i++)); do
  "$traj" run logreg.traj --out "$out/run" --force 2>/dev/null
  r=$(grep -o '"run_seconds": *[0-9.e-]*' "$out/run/run.json" | grep -o '[0-9.e-]*$')
  s=$(printf ':step 100000\n:time\n' | "$traj" repl logreg.traj 2>/dev/null |
      grep -o 'steps in [0-9.]* s' | grep -o '[0-9.]*')
  printf 'run %.4f s   repl :step %.4f s\n' "$r" "$s"
  runs+=("$r"); repls+=("$s")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mr=$(median "${runs[@]}"); ms=$(median "${repls[@]}")
printf 'median: run %s s, repl %s s, repl/run %.3f\n' "$mr" "$ms" "$(echo "$ms / $mr" | bc -l)"
