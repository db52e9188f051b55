#!/usr/bin/env python3
"""The decode kernel's warp timeline (src/kernels/decode_trace.cuh): per event, when the warps reached it,
in µs after the first warp's start (global timer), and after their own start (their SM's clock).

    scripts/decode_trace.py FILE
"""
import sys, statistics as st
# 8: unsplit, the first output stored; split, the cluster wait passed. 9: split, the cluster barrier after the sends.
names = ['start', 'ids', 'wait0', 'wait1', 'waitN', 'loop', 'sums', 'end', 'out0|cw', 'csync']
E = len(names)
rows = []
head = None
for line in open(sys.argv[1]):
    if line.startswith('grid'): head = line.strip(); continue
    v = list(map(int, line.split())); rows.append(v)
g = lambda r, e: r[2 + e]
c = lambda r, e: r[2 + E + e]
G0 = min(g(r, 0) for r in rows)
span = max(g(r, 7) for r in rows if g(r, 7)) - G0
ghz = st.median([(c(r, 7) - c(r, 0)) / (g(r, 7) - g(r, 0)) for r in rows if g(r, 7) > g(r, 0)])
allg = [g(r, e) for r in rows for e in range(E) if g(r, e)]
res = sum(1 for x in allg if x % 1000 == 0) / len(allg)
sms = len(set(r[2 + 2 * E] for r in rows))
print('%s  warps %d  SMs %d  span %.2f us  clock %.2f GHz  (globaltimer values on whole us: %.0f%%)' % (head, len(rows), sms, span / 1000, ghz, 100 * res))
def pct(v):
    v = sorted(v); n = len(v)
    return '%6.2f %6.2f %6.2f %6.2f' % (v[0], v[n // 10], v[n // 2], v[-1])
print('%-6s %27s   %27s' % ('event', 'global us: min p10 p50 max', 'own clock us since start'))
for e in range(E):
    gv = [(g(r, e) - G0) / 1000 for r in rows if g(r, e)]
    cv = [(c(r, e) - c(r, 0)) / ghz / 1000 for r in rows if g(r, e)]
    if gv: print('%-6s %27s   %27s   n=%d' % (names[e], pct(gv), pct(cv), len(gv)))
