"""One table from several cpu_suite.py records of the same command: per family and ratio, the median
over the runs and the range (a VM's speed drifts between runs; one run's ratio is one sample).
`--ab DIR [LABEL]`: an A/B folder (ab_suite.sh's DIR/base and DIR/this records): each row's ms/step
per run in both, and this/base of the medians.

    python benchmarks/suite_table.py benchmarks/results/cpu_suite-<cpu>-<date>.json [...]
    python benchmarks/suite_table.py --ab benchmarks/results/ab-<date> [base-rev]
"""

import collections
import glob
import json
import statistics
import sys

COLUMNS = (  # (header, numerator row, denominator row)
    ("eager/dlkit", "torch_eager", "dlkit"),
    ("compile/dlkit", "torch_compile", "dlkit"),
    ("eager/dlkit 1dev", "torch_eager", "dlkit_1dev"),
    ("compile/dlkit 1dev", "torch_compile", "dlkit_1dev"),
    ("eager/dlkit 1step", "torch_eager", "dlkit_1step"),
    ("xla/oneDNN convs", "dlkit_xla", "dlkit"),
)


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def load(path: str) -> dict:
    """One cpu_suite.py record; a missing or foreign file is a one-line exit."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"suite_table: cannot read {path}: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("families"), list):
        raise SystemExit(f"suite_table: {path} is not a cpu_suite.py record (no 'families')")
    return record


def main(paths: list[str]) -> None:
    runs = [load(p) for p in paths]
    order = [f["family"] for f in runs[0]["families"]]
    print(f"{len(runs)} runs: " + ", ".join(p.rsplit("/", 1)[-1] for p in paths))
    print("| family | dlkit ms | " + " | ".join(h for h, _, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    for name in order:
        fams = [f for r in runs for f in r["families"] if f["family"] == name]
        ms = [f["ms_per_step"]["dlkit"] for f in fams]
        cells = []
        for _, num, den in COLUMNS:
            got = [f["ms_per_step"] for f in fams]
            cells.append(cell([g[num] / g[den] for g in got if num in g and den in g]))
        print(f"| {name} | {cell(ms)} | " + " | ".join(cells) + " |")


def ab(out: str, label: str = "base") -> None:
    ms = collections.defaultdict(list)  # (tree, family, row) -> ms/step per run
    for tree in ("base", "this"):
        for path in sorted(glob.glob(f"{out}/{tree}/cpu_suite-*.json")):
            for fam in load(path)["families"]:
                for row, value in fam["ms_per_step"].items():
                    ms[tree, fam["family"], row].append(value)
    if not ms:
        raise SystemExit(f"suite_table --ab: no records in {out}/base or {out}/this")
    order = list(dict.fromkeys((f, r) for _, f, r in ms))
    print(f"\nA/B {label} (base) vs this: ms/step per run, this/base of the medians (< 1: faster)")
    for fam, row in order:
        a, b = ms.get(("base", fam, row), []), ms.get(("this", fam, row), [])
        if a and b:
            r = statistics.median(b) / statistics.median(a)
            runs = lambda xs: " ".join(f"{x:.1f}" for x in xs)  # noqa: E731
            print(f"{fam:15s} {row:12s} base [{runs(a)}]  this [{runs(b)}]  this/base {r:.3f}")
    print(f"records: {out}")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "--ab":
        if len(sys.argv) < 3:
            raise SystemExit("suite_table --ab: give an ab_suite.sh folder (DIR/base, DIR/this)")
        ab(*sys.argv[2:4])
    else:
        main(sys.argv[1:])
