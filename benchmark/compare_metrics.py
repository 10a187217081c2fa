"""Compares two runs' metrics.csv (an uninterrupted run, a resumed one): the training rows (not eval/, not SPS) they
share, how many are identical, the largest difference, and the losses at the first run's last step.

    python benchmark/compare_metrics.py NAME DEVICE runs/A/metrics.csv runs/B/metrics.csv
"""

import csv
import sys


def rows(path):
    with open(path, newline="") as f:
        return {
            (int(r["global_step"]), r["metric"]): float(r["value"])
            for r in csv.DictReader(f)
            if r["metric"] != "charts/SPS" and not r["metric"].startswith("eval/")
        }


script, dev, a, b = sys.argv[1:]
x, y = rows(a), rows(b)
common = sorted(set(x) & set(y))
exact = sum(x[k] == y[k] for k in common)
diff = max((abs(x[k] - y[k]) for k in common), default=float("nan"))
last = max(s for s, _ in x)
print(
    f"RESUME {script} {dev}: training rows {len(x)} vs {len(y)}, common {len(common)}, identical {exact}, "
    f"max abs diff {diff:.3g}"
)
print(
    f"LAST {script} {dev} at {last}: "
    + ", ".join(f"{m[7:]}={v:.5g}" for (s, m), v in sorted(x.items()) if s == last and m.startswith("losses/"))
)
