"""One table from several cpu_suite.py records of the same command: per family and ratio, the median
over the runs and the range (a VM's speed drifts between runs; one run's ratio is one sample).

    python benchmarks/suite_table.py benchmarks/results/cpu_suite-<cpu>-<date>.json [...]
"""

import json
import statistics
import sys

COLUMNS = (  # (header, numerator row, denominator row)
    ("eager/dlkit", "torch_eager", "dlkit"),
    ("compile/dlkit", "torch_compile", "dlkit"),
    ("eager/dlkit 1dev", "torch_eager", "dlkit_1dev"),
    ("compile/dlkit 1dev", "torch_compile", "dlkit_1dev"),
    ("xla/oneDNN convs", "dlkit_xla", "dlkit"),
)


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(paths: list[str]) -> None:
    runs = [json.load(open(p)) for p in paths]
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


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
