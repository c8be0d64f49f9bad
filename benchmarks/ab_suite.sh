#!/usr/bin/env bash
# Before/after a change in one window: cpu_suite.py of an older commit and of this tree, alternating
# (base, this, base, this, ...), each in its own process; prints each family's dlkit ms/step per
# tree (and PyTorch eager's, the drift control: the same twin in both) and this/base.
#
#   JAX_PLATFORMS=cpu bash benchmarks/ab_suite.sh BASE_REV [ROUNDS] [cpu_suite.py flags...]
#   e.g. THIS_FLAGS=--platform=omp_default bash benchmarks/ab_suite.sh d8f83c7 2 \
#            --families char_lstm,char_gru --compile none
# THIS_FLAGS: flags for this tree's suite only (ones the base's suite lacks); AB_OUT: where the
# records go; PYTHON: the interpreter (default: python).
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
  (cd "$base" && PYTHONPATH="$base" "$py" benchmarks/cpu_suite.py --out "$out/base" "$@")
  (cd "$root" && "$py" benchmarks/cpu_suite.py --out "$out/this" ${THIS_FLAGS:-} "$@")
done
"$py" - "$out" "$base_rev" <<'PY'
import collections, glob, json, statistics, sys

out, rev = sys.argv[1], sys.argv[2]
ms = collections.defaultdict(list)  # (tree, family, row) -> ms/step per run
for tree in ("base", "this"):
    for path in sorted(glob.glob(f"{out}/{tree}/cpu_suite-*.json")):
        for fam in json.load(open(path))["families"]:
            for row in ("dlkit", "torch_eager"):
                if row in fam["ms_per_step"]:
                    ms[tree, fam["family"], row].append(fam["ms_per_step"][row])
families = sorted({f for _, f, _ in ms}, key=lambda f: min(k for k in ms if k[1] == f))
print(f"\nA/B {rev} (base) vs this tree, ms/step per run; ratio of medians this/base (< 1: faster)")
for fam in families:
    for row in ("dlkit", "torch_eager"):
        a, b = ms.get(("base", fam, row), []), ms.get(("this", fam, row), [])
        if a and b:
            r = statistics.median(b) / statistics.median(a)
            runs = lambda xs: " ".join(f"{x:.1f}" for x in xs)  # noqa: E731
            print(f"{fam:15s} {row:12s} base [{runs(a)}]  this [{runs(b)}]  this/base {r:.3f}")
print(f"records: {out}")
PY
