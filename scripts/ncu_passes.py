#!/usr/bin/env python3
"""Per-kernel GPU time of the model's last passes, from ncu's CSV of launch durations.

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
        build-gpu/samoyeds run ... > run.csv
    scripts/ncu_passes.py run.csv [--passes N]

A pass starts at each embedding launch (kernels::embed), so run with --graph off (a replayed decode
graph does not start with one). With `samoyeds run --layers 1 --graph off` the passes are the check,
the warm-up and timed prefills, then one per decode step. Launches before the first pass (weight
building) are left out. Prints every pass's total, then for the last N passes (default 2), or with
--largest the N longest ones, the launches in order with grid and duration and the pass grouped by
kernel name.
"""
import argparse
import collections
import csv
import sys


def launches(path):
    with open(path) as f:
        lines = [line for line in f if line.startswith('"')]
    out = []
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        us = float(r["Metric Value"].replace(",", "")) / 1000.0  # ncu prints 484,192 (ns)
        out.append((int(r["ID"]), r["Kernel Name"], r.get("Grid Size", ""), us))
    out.sort()
    return out


def short(name, width=72):
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--passes", type=int, default=2, help="how many passes to print")
    ap.add_argument("--largest", action="store_true", help="print the longest passes instead of the last ones")
    args = ap.parse_args()
    rows = launches(args.csv)
    if not rows:
        sys.exit(f"{args.csv}: no gpu__time_duration.sum rows (was ncu run with --csv --metrics gpu__time_duration.sum?)")
    starts = [i for i, r in enumerate(rows) if "embed_kernel" in r[1]]
    if not starts:
        sys.exit(f"{args.csv}: no embedding launch, so no model pass to split at")
    bounds = list(zip(starts, starts[1:] + [len(rows)]))
    print(f"{len(rows)} launches, {len(bounds)} passes; totals: " +
          ", ".join(f"{sum(r[3] for r in rows[a:b]):.1f}" for a, b in bounds) + " us")
    numbered = list(enumerate(bounds))
    if args.largest:
        numbered.sort(key=lambda nb: -sum(r[3] for r in rows[nb[1][0]:nb[1][1]]))
        chosen = sorted(numbered[: args.passes])
    else:
        chosen = numbered[-args.passes:]
    for number, (a, b) in chosen:
        part = rows[a:b]
        total = sum(r[3] for r in part)
        print(f"\n== pass {number}: {len(part)} launches, {total:.1f} us")
        for _, name, grid, us in part:
            print(f"  {us:9.1f} us  {grid:>16}  {short(name)}")
        agg = collections.defaultdict(lambda: [0, 0.0])
        for _, name, _, us in part:
            agg[name][0] += 1
            agg[name][1] += us
        print(f"  -- by kernel")
        for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            print(f"  {us:9.1f} us {n:4d} x {us / n:8.2f} us  {us / total * 100:5.1f} %  {short(name)}")


if __name__ == "__main__":
    main()
