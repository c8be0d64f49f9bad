#!/usr/bin/env bash
# Before/after a change in one window: cpu_suite.py of an older commit and of this tree, alternating
# (base, this, base, this, ...), each in its own process; prints each family's dlkit ms/step per
# tree (and PyTorch eager's, the drift control: the same twin in both) and this/base.
#
#   JAX_PLATFORMS=cpu bash benchmarks/ab_suite.sh BASE_REV [ROUNDS] [cpu_suite.py flags...]
#   e.g. THIS_FLAGS=--platform=omp_default bash benchmarks/ab_suite.sh d8f83c7 2 \
#            --families char_lstm,char_gru --compile none
# THIS_FLAGS / BASE_FLAGS: flags for one tree's suite only (e.g. BASE_FLAGS=--platform=async_dispatch
# with base HEAD: one trick's A/B); AB_OUT: where the records go; PYTHON: the interpreter (default:
# python). The summary is `suite_table.py --ab`.
#
# The base runs from a temporary git worktree with PYTHONPATH pointing at it (same venv), its native
# kernels built there from its own sources; the records land in benchmarks/results/ab-<date>/{base,this}/.
set -euo pipefail
base_rev=$1
rounds=${2:-2}
shift $(($# < 2 ? $# : 2))
root="$(cd "$(dirname "$0")/.." && pwd)"
base="$(mktemp -d)/base"
git -C "$root" worktree add --detach "$base" "$base_rev" >/dev/null
trap 'git -C "$root" worktree remove --force "$base"' EXIT
py="${PYTHON:-python}"
# the base's own native kernels (untracked build output): built from its sources, quietly
(cd "$base" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1) || echo "base: no native build"
out="${AB_OUT:-$root/benchmarks/results/ab-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out/base" "$out/this"
for _ in $(seq "$rounds"); do
  (cd "$base" && PYTHONPATH="$base" "$py" benchmarks/cpu_suite.py --out "$out/base" ${BASE_FLAGS:-} "$@")
  (cd "$root" && "$py" benchmarks/cpu_suite.py --out "$out/this" ${THIS_FLAGS:-} "$@")
done
"$py" "$root/benchmarks/suite_table.py" --ab "$out" "$base_rev"
