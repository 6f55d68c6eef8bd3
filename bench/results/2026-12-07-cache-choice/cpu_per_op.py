#!/usr/bin/env python3
"""cpu_per_op.py BIN BENCHREGEX N1 N2 [REPS] [extra args...]: CPU time (user+sys, the
test process and its children) per benchmark iteration, as
(cpu(N2) - cpu(N1)) / (N2 - N1), so setup costs cancel. Robust to other load on
the machine, which inflates wall time but not the CPU a process uses. Prints the
median and min over REPS pairs."""
import resource, subprocess, sys, statistics, os
binp, bench, n1, n2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 5
extra = sys.argv[6:]
def cpu(n):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([binp, '-test.run', '^$', '-test.bench', bench, '-test.benchtime', f'{n}x', '-test.count', '1'] + extra,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=os.path.dirname(binp) or '.')
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
vals = []
for _ in range(reps):
    a = cpu(n1); b = cpu(n2)
    vals.append((b - a) / (n2 - n1) * 1e9)
print(f"{bench}: cpu ns/op median {statistics.median(vals):.0f} min {min(vals):.0f} (n={reps}) {[round(v) for v in vals]}")
