"""The worst error each kind of GPU check reached, from the JSON lines the GPU tests append to
$RINGSP_ERR_LOG (tests/kernels/test_ops_gpu.py). Usage: python3 -m ringsp_bench.worst_errors FILE"""
import collections
import json
import sys


def main(path):
    worst = collections.defaultdict(lambda: [0.0, 0.0])
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            w = worst[" ".join(r["check"].split()[:2]).split("(")[0] + " " + r["dtype"]]
            w[0], w[1] = max(w[0], r["row_ratio"]), max(w[1], r["lse"])
    for kind, (ratio, lse) in sorted(worst.items()):
        print(f"  {kind:40s} row err/row max {ratio:.2e}  lse {lse:.2e}")


if __name__ == "__main__":
    main(sys.argv[1])
