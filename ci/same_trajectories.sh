#!/usr/bin/env bash
# Runs every example, bench case and runnable `traj` block of the docs with two `traj`
# binaries (both backends) and compares the run folders byte for byte: trajectory.csv
# and params/*.npy. For refactors and speed work that must not change a single bit.
#   ci/same_trajectories.sh OLD_TRAJ NEW_TRAJ [STEPS]
# STEPS (default 300) caps every run so the whole check takes a few minutes.
set -uo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); steps=${3:-300}
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/docs"
# `traj run` and plain `traj` blocks of the docs, one file each.
for md in docs/*.md README.md; do
  awk -v out="$work/docs/$(basename "$md" .md)" '
    /^```traj( run)?$/ { n++; f = sprintf("%s_%02d.traj", out, n); on = 1; next }
    /^```/ { on = 0; next }
    on { print > f }' "$md"
done
programs=(examples/*.traj bench/*.traj bench/spellings/*.traj "$work"/docs/*.traj)
same=0; differ=0; failed=0
for p in "${programs[@]}"; do
  for backend in jit interp; do
    # bench cases at full size are slow on the interpreter; their JIT runs suffice.
    [[ $backend == interp && $p == bench/*.traj && $p != bench/spellings/* ]] && continue
    s=$steps; [[ $backend == interp ]] && s=$(( steps < 50 ? steps : 50 ))
    for side in old new; do
      bin=$old; [[ $side == new ]] && bin=$new
      rm -rf "$work/$side"
      (cd "$(dirname "$p")" && "$bin" run "$(basename "$p")" --steps "$s" --backend "$backend" \
         --out "$work/$side" --force >/dev/null 2>"$work/$side.err")
      echo $? > "$work/$side.rc"
    done
    if ! cmp -s "$work/old.rc" "$work/new.rc"; then
      echo "DIFFER (exit code) $p [$backend]"; differ=$((differ + 1)); continue
    fi
    if [[ ! -f $work/old/trajectory.csv ]]; then
      echo "no run   $p [$backend]: $(head -c 200 "$work/old.err")"; failed=$((failed + 1)); continue
    fi
    ok=1
    for f in trajectory.csv $(cd "$work/old" && ls params 2>/dev/null | sed 's|^|params/|'); do
      cmp -s "$work/old/$f" "$work/new/$f" || { ok=0; echo "DIFFER   $p [$backend] $f"; }
    done
    if ((ok)); then same=$((same + 1)); else differ=$((differ + 1)); fi
  done
done
echo "same: $same, differ: $differ, not runnable: $failed"
((differ == 0))
