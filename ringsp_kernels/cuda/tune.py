"""Measures the dispatch choice (Triton config; Triton vs cuDNN+merge vs FA4+merge where
flash-attn-4 is installed) of shape classes on this GPU and stores it: in the disk cache
(so later runs start warm) and, with --out, in a table file -- the one shipped in the
package is ringsp_kernels/tables/dispatch.json.

    python -m ringsp_kernels.cuda.tune [--set ring,kernels] [--shape B,Sq,Sk,H,D,op ...]
                                       [--precision fp8,int8] [--out TABLE.json] [--force]

Sets: `ring` = one rank's ring steps (Sq = Sk = ceil(S/N)) and Ulysses shards (full S,
ceil(H/N) heads) of Wan 480p/720p and Qwen-Image 1328^2 for N = 2, 4, 8 (ringsp_bench.ring_rank);
`kernels` = the shapes of ringsp_bench.attn_kernels (attn_fwd over S, steps over S/4 blocks).
--precision fp8,int8 measures the 8-bit kernel's config (ops fp8_fwd, int8_step, ...) of the
selected shapes instead of their native classes. Classes already in the disk cache are
skipped unless --force. bf16, B=1.
"""
import argparse
import datetime
import math
import sys
import time

import torch

# (name, S, H, D): the kernel benchmark's shapes (ringsp_bench.attn_kernels)
KERNEL_SHAPES = [
    ("wan1.3b-480p", 32760, 12, 128),
    ("wan1.3b-half", 16380, 12, 128),
    ("wan-720p-h5", 75600, 5, 128),
    ("qwen-1328", 7146, 24, 128),
    ("d64", 16380, 24, 64),
]
# (name, S, H): the models whose per-rank ring work bounds SP speed-ups (ringsp_bench.ring_rank)
RING_SHAPES = [("wan-480p", 32760, 12), ("wan-720p", 75600, 12), ("qwen-1328", 7146, 24)]
DEGREES = (2, 4, 8)


def ring_classes(head_dim=128):
    """(B, Sq, Sk, H, D, op) of a rank's ring steps and of Ulysses shards."""
    out = []
    for _, S, H in RING_SHAPES:
        for N in DEGREES:
            blk = math.ceil(S / N)
            out += [(1, blk, blk, H, head_dim, "step"), (1, S, S, math.ceil(H / N), head_dim, "fwd")]
    return out


def kernel_classes():
    out = []
    for _, S, H, D in KERNEL_SHAPES:
        out += [(1, S, S, H, D, "fwd"), (1, S, S // 4, H, D, "step")]
    return out


SETS = {"ring": ring_classes, "kernels": kernel_classes}


def _parse_shape(text):
    from ..dispatch import OPS

    parts = text.split(",")
    if len(parts) != 6 or parts[5] not in OPS:
        raise argparse.ArgumentTypeError(f"--shape wants B,Sq,Sk,H,D,op with op one of {', '.join(OPS)}, "
                                         f"got {text!r}")
    return (*(int(x) for x in parts[:5]), parts[5])


def _parse_precisions(text):
    from ..fp8_reference import PRECISIONS

    names = [p for p in text.split(",") if p]
    bad = [p for p in names if p not in PRECISIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"--precision takes a comma-separated list of {PRECISIONS}, got {text!r}")
    return names


def with_precisions(shapes, precisions):
    """`shapes`, or with `precisions` the 8-bit classes of its native ones (and its 8-bit ones)."""
    from ..dispatch import NATIVE_OPS

    if not precisions:
        return shapes
    return ([(*s[:5], f"{p}_{s[5]}") for p in precisions for s in shapes if s[5] in NATIVE_OPS]
            + [s for s in shapes if s[5] not in NATIVE_OPS])


def measure(shape, dtype=torch.bfloat16, seed=0):
    """The dispatch key and measured entry of one class, timed on random inputs."""
    from .. import dispatch
    from . import ops as cuda

    B, Sq, Sk, H, D, op = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, Sq, H, D, device="cuda", dtype=dtype, generator=g)
    k, v = (torch.randn(B, Sk, H, D, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    key = dispatch.class_key(cuda.device_name(q.get_device()), dtype, D, H, B, Sq, Sk, op)
    if op in dispatch.Q8_OPS:
        from . import q8

        precision, kind = op.split("_")
        return key, q8.measure_class(q, k, v, D ** -0.5, Sk, precision, kind == "step")
    return key, cuda._measure(q, k, v, D ** -0.5, Sk, op, key)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="ring,kernels", help="comma-separated: ring, kernels (or '' for none)")
    p.add_argument("--shape", type=_parse_shape, action="append", default=[], help="B,Sq,Sk,H,D,op")
    p.add_argument("--precision", type=_parse_precisions, default=[],
                   help="the 8-bit classes of these precisions instead (comma-separated: fp8, int8)")
    p.add_argument("--out", help="also write the measured entries into this table (merged)")
    p.add_argument("--force", action="store_true", help="re-measure classes the disk cache holds")
    p.add_argument("--cache-dir", help="disk-cache folder (default $RINGSP_CACHE_DIR or ~/.cache/ringsp)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    import logging

    from .. import dispatch
    from . import ops as cuda

    logging.basicConfig(format="%(message)s")
    if args.cache_dir:
        dispatch.reset(cache_dir=args.cache_dir)
    shapes = [s for name in filter(None, args.set.split(",")) for s in SETS[name]()] + args.shape
    shapes = list(dict.fromkeys(with_precisions(shapes, args.precision)))
    device = cuda.device_name(torch.cuda.current_device())
    versions = cuda.versions()  # the disk cache every later run of these versions reads
    command = " ".join(["python -m ringsp_kernels.cuda.tune"] + (argv if argv is not None else sys.argv[1:]))
    meta = {device: {**versions, "date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command}}
    cached = dispatch.read_table(dispatch.cache_path(versions))
    print(f"# tuning {len(shapes)} classes on {device} (cache {dispatch.cache_path(versions)})", flush=True)
    done = {}
    for shape in shapes:
        B, Sq, Sk, H, D, op = shape
        key = dispatch.class_key(device, torch.bfloat16, D, H, B, Sq, Sk, op)
        if key in done or (key in cached and not args.force):
            done.setdefault(key, cached.get(key))
            continue
        t0 = time.perf_counter()
        key, entry = measure(shape)
        done[key] = entry
        dispatch.record({key: entry}, versions, meta=meta, path=args.out)  # per class: a timeout loses little
        ms = entry["ms"]
        best_t = min((t for n, t in ms.items() if dispatch.path_of(n) == "triton"), default=float("nan"))
        vendors = "  ".join(f"{n} {t:.4f} ms" for n, t in ms.items() if dispatch.path_of(n) != "triton")
        print(f"{op:9s} B={B} Sq={Sq} Sk={Sk} H={H} D={D}: {entry['path']:6s} {entry['config']}  "
              f"triton {best_t:.4f} ms  {vendors}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    reused = {k: e for k, e in done.items() if e is not None and k in cached and not args.force}
    if args.out and reused:  # classes measured by an earlier run still belong in the table
        dispatch.write_table(args.out, reused, meta=meta)
    print(f"# {len(done) - len(reused)} measured, {len(reused)} from the cache"
          + (f"; table {args.out}" if args.out else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
