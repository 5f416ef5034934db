"""Which attention path (and which Triton config) runs a shape class on CUDA.

A class is (device name, dtype, head dim, heads, size class, op): the size class is the
power-of-two bucket of B, Sq and Sk (k's buffer length, not kv_len, so that ranks whose
last block carries padding still land in the same class), op is "fwd" or "step" -- or, for
the 8-bit precisions, "fp8_fwd", "fp8_step", "int8_fwd", "int8_step", whose entries are
always the Triton path and whose config is the 8-bit kernel's (so ranks agree on its key tile
size too, which its rounding depends on: replicated text queries stay identical). An entry
is {"path": "triton" | "cudnn" | "fa4", "config": [BLOCK_M, BLOCK_N, warps, stages, warp_spec],
"ms": {candidate: median ms}}: the fastest path measured and the best Triton config. Where
the entry's path cannot run in this process (FA4 not installed, cuDNN refusing the dtype),
choose() takes the fastest of the measured candidates that can, so a table measured with
FA4 installed serves users without it.

Where an entry comes from:
  local mode (default, one process):  this process's resolved classes, then the disk cache
      (one file per set of software versions -- torch, Triton, CUDA, cuDNN, FA4 -- which every
      caller passes in as `versions`; the device name is in each key; written on first use or
      by `python -m ringsp_kernels.cuda.tune`), then the table shipped in the package
      (tables/dispatch.json, written by the same command), then a measurement, which is
      saved to the disk cache so the next run starts warm.
  consistent mode (after install(), which the parallel layer calls with rank 0's
      snapshot() at init): the installed table only. A class it lacks is never timed --
      timings differ between ranks -- but derived by fallback(): the entry of the nearest
      measured class of the same device, dtype, head dim and op, else the portable default.
      Both are pure functions of the key and the table, so every rank that installed the
      same table makes the same choice, always.
The parallel layer, once per process group, on every rank (through the face:
ringsp_kernels.choices_snapshot() / install_choices()):
    box = [dispatch.snapshot(versions) if rank == 0 else None]
    dist.broadcast_object_list(box, src=<global rank of the group's rank 0>, group=group)
    dispatch.install(box[0])          # dispatch.fingerprint() then agrees across ranks
To have measured choices (rather than the fallback) in SP runs, measure the classes first:
`python -m ringsp_kernels.cuda.tune` (or any single-process run, whose first calls measure).
This module is pure Python (no GPU) and imports nothing of the backends: the CUDA wing
supplies the measurement and the versions.

A new path: its name in PATHS, its implementation in ringsp_kernels/cuda/paths.py.
"""
import hashlib
import json
import logging
import math
import os
import tempfile

from . import caches, settings

log = logging.getLogger("ringsp")

FORMAT = 1
PATHS = ("triton", "cudnn", "fa4", "hopper")
NATIVE_OPS = ("fwd", "step")
Q8_OPS = ("fp8_fwd", "fp8_step", "int8_fwd", "int8_step")
OPS = NATIVE_OPS + Q8_OPS
# the 8-bit kernel's config where no class of its op was measured: one of the configs it is
# timed with (cuda/triton_fp8.CONFIGS), mid-sized, so it compiles on every GPU with 8-bit cores
Q8_DEFAULT = [128, 64, 8, 3, False]
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables", "dispatch.json")

_state = {
    "installed": None,  # key -> entry, set by install(): consistent mode
    "resolved": {},     # key -> entry resolved in this process
    "shipped": None,    # key -> entry of the shipped table, read once
    "cache_dir": None,  # override of the cache folder (tests, tune --cache-dir)
}
_disk_tables = {}  # disk-cache file -> its entries, read once
stats = {"measured": 0, "fallback": 0, "disk": 0, "shipped": 0, "installed": 0}
_listeners = []


def bucket(n):
    """Power-of-two size class of n (1 for n <= 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def class_key(device, dtype, head_dim, heads, B, Sq, Sk, op):
    """The string key of a shape class; `dtype` is a torch dtype or its name."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    name = str(dtype).replace("torch.", "")
    return f"{device}|{name}|D{int(head_dim)}|H{int(heads)}|B{bucket(B)}|Sq{bucket(Sq)}|Sk{bucket(Sk)}|{op}"


def parse_key(key):
    """The fields of a class key; ValueError for a malformed one."""
    parts = key.rsplit("|", 7)
    if len(parts) != 8:
        raise ValueError(f"malformed dispatch key {key!r}")
    device, dtype, d, h, b, sq, sk, op = parts
    try:
        nums = {name: int(p[len(prefix):]) for name, p, prefix in
                (("D", d, "D"), ("H", h, "H"), ("B", b, "B"), ("Sq", sq, "Sq"), ("Sk", sk, "Sk"))
                if p.startswith(prefix)}
    except ValueError:
        nums = {}
    if len(nums) != 5 or op not in OPS:
        raise ValueError(f"malformed dispatch key {key!r}")
    return {"device": device, "dtype": dtype, "op": op, **nums}


def default_config(head_dim, op="fwd"):
    """A Triton config that compiles on any CUDA GPU Triton supports (no warp
    specialisation, shared memory within an A100's); op's kernel: native or 8-bit."""
    if op in Q8_OPS:
        return list(Q8_DEFAULT)
    if head_dim <= 64:
        return [128, 64, 4, 3, False]
    if head_dim <= 128:
        return [128, 64, 8, 3, False]
    return [64, 64, 4, 2, False]


def valid_entry(entry):
    """Whether `entry` is a well-formed table entry (files may be corrupt or hand-edited)."""
    if not isinstance(entry, dict) or entry.get("path") not in PATHS:
        return False
    cfg = entry.get("config")
    return (isinstance(cfg, list) and len(cfg) == 5 and all(type(x) is int and x > 0 for x in cfg[:4])
            and isinstance(cfg[4], bool))


def _clean(entries, where):
    """The valid entries of a loaded table; invalid ones are dropped with a warning."""
    if not isinstance(entries, dict):
        log.warning("ringsp: dispatch table %s has no entries mapping; ignored", where)
        return {}
    good = {}
    for key, entry in entries.items():
        try:
            parse_key(key)
        except (ValueError, AttributeError):
            log.warning("ringsp: dispatch table %s: bad key %r dropped", where, key)
            continue
        if not valid_entry(entry):
            log.warning("ringsp: dispatch table %s: bad entry for %s dropped", where, key)
            continue
        good[key] = entry
    return good


def read_table(path):
    """Entries of a table file; {} for a missing file, and for a corrupt one (with a warning,
    so a truncated cache costs a re-measurement, never a crash)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ringsp: dispatch table %s is unreadable (%s); ignored", path, e)
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        log.warning("ringsp: dispatch table %s has an unknown format; ignored", path)
        return {}
    return _clean(data.get("entries"), path)


def _read_meta(path):
    try:
        with open(path) as f:
            meta = json.load(f).get("meta")
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_table(path, entries, meta=None, merge=True):
    """Writes entries (merged over what the file holds; `meta` merged key by key) atomically:
    a reader never sees a half-written file, and ranks writing at once lose at most each
    other's new entries."""
    merged = dict(read_table(path)) if merge else {}
    merged.update(entries)
    old_meta = _read_meta(path) if merge else {}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    body = {"format": FORMAT, "meta": {**old_meta, **(meta or {})}, "entries": dict(sorted(merged.items()))}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return merged


def cache_dir():
    """The disk cache's folder: reset(cache_dir=...), else RINGSP_CACHE_DIR (ringsp_kernels.settings)."""
    if _state["cache_dir"] is not None:
        return _state["cache_dir"]
    return settings.current().cache_dir


def _check_versions(versions):
    if not isinstance(versions, dict):
        raise TypeError(f"versions must be a dict of software versions, got {type(versions).__name__}")


def cache_path(versions):
    """The disk-cache file of `versions` (the device is in each key)."""
    _check_versions(versions)
    blob = json.dumps(versions, sort_keys=True, default=str).encode()
    return os.path.join(cache_dir(), f"dispatch-{hashlib.sha256(blob).hexdigest()[:16]}.json")


def _disk(versions):
    path = cache_path(versions)
    table = _disk_tables.get(path)
    if table is None:
        table = _disk_tables[path] = read_table(path)
    return table


def _shipped():
    if _state["shipped"] is None:
        _state["shipped"] = read_table(SHIPPED)
    return _state["shipped"]


def _distance(a, b):
    """How far apart two classes of the same device/dtype/D/op are (log2 of each size)."""
    return sum(abs(math.log2(a[f]) - math.log2(b[f])) for f in ("B", "Sq", "Sk", "H"))


def fallback(key, table):
    """The entry for `key` derived from `table` without timing: a copy of the nearest class
    of the same device, dtype, head dim and op (ties broken by key order), else the
    portable Triton default. A pure function of its arguments."""
    want = parse_key(key)
    same = ("device", "dtype", "D", "op")
    best = None
    for other, entry in table.items():
        try:
            got = parse_key(other)
        except ValueError:
            continue
        if all(got[f] == want[f] for f in same):
            cand = (_distance(want, got), other)
            if best is None or cand < best[0]:
                best = (cand, entry)
    if best is None:
        return {"path": "triton", "config": default_config(want["D"], want["op"]), "source": "default"}
    entry = {"path": best[1]["path"], "config": list(best[1]["config"]), "source": f"nearest {best[0][1]}"}
    if isinstance(best[1].get("ms"), dict):  # choose() then has the nearest class's runners-up
        entry["ms"] = dict(best[1]["ms"])
    return entry


def path_of(candidate):
    """The path of a timing's candidate name ("triton:128,64,8,3,0" -> "triton")."""
    return candidate.split(":", 1)[0]


def choose(entry, usable):
    """The path to run for `entry` among the `usable` paths (a set that holds "triton"): the
    entry's own, else the fastest usable candidate its timings name, else Triton. A pure
    function of its arguments."""
    if entry["path"] in usable:
        return entry["path"]
    timed = [(t, path_of(name)) for name, t in (entry.get("ms") or {}).items()
             if path_of(name) in usable and isinstance(t, (int, float))]
    return min(timed)[1] if timed else "triton"


def consistent():
    """True after install(): choices come from the installed table alone."""
    return _state["installed"] is not None


def knows(entry, paths):
    """Whether `entry` was measured with each of `paths` among its candidates (its "paths",
    or for older entries the candidates its timings name)."""
    seen = set(entry.get("paths") or ()) | {path_of(name) for name in entry.get("ms") or {}}
    return set(paths) <= seen


def lookup(key, versions, wanted=()):
    """The entry for `key` if one is known without measuring, else None (local mode) -- in
    consistent mode always an entry (the fallback rule fills gaps). `versions`: the software
    versions whose disk cache to read. `wanted` (local mode): paths a table entry must have
    measured to be used -- one from before a candidate existed (a new kernel, a newly installed
    FA4) is passed over, so the class is measured again with it."""
    hit = _state["resolved"].get(key)
    if hit is not None:
        return hit
    if _state["installed"] is not None:
        entry = _state["installed"].get(key)
        stats["installed" if entry is not None else "fallback"] += 1
        return _remember(key, entry if entry is not None else fallback(key, _state["installed"]))
    for name, table in (("disk", _disk(versions)), ("shipped", _shipped())):
        if key in table and knows(table[key], wanted):
            stats[name] += 1
            return _remember(key, table[key])
    return None


def _known(key, versions):
    """The disk cache's or the shipped table's entry for `key` (None), whatever it measured."""
    return _disk(versions).get(key) or _shipped().get(key)


def resolve(key, versions, measure=None, wanted=()):
    """The entry for `key`. In local mode a class no table knows (with the `wanted` paths
    among its candidates, see lookup) is measured by `measure()` (-> entry) and saved to the
    disk cache of `versions`; without `measure` (a CUDA graph capture, a forced path) a known
    entry serves as it is and an unknown class gets the fallback rule, not remembered, so a
    later eager call can still measure it."""
    entry = lookup(key, versions, wanted)
    if entry is not None:
        return entry
    if measure is None:
        known = _known(key, versions)
        if known is not None:  # not remembered either: a later eager call measures it again
            return known
        stats["fallback"] += 1
        return fallback(key, {**_shipped(), **_disk(versions)})
    entry = measure()
    if not valid_entry(entry):
        raise ValueError(f"measurement of {key} returned an invalid entry {entry!r}")
    stats["measured"] += 1
    entry = dict(entry, source="measured")
    _save(key, entry, versions)
    return _remember(key, entry)


def _remember(key, entry):
    _state["resolved"][key] = entry
    return entry


def _save(key, entry, versions):
    _disk(versions)[key] = entry
    try:
        write_table(cache_path(versions), {key: entry}, meta={"versions": versions})
    except OSError as e:  # a read-only home: the choice still holds for this process
        log.warning("ringsp: cannot write the dispatch cache %s: %s", cache_path(versions), e)


def record(entries, versions, meta=None, path=None):
    """Stores measured entries (the tune command): in this process, the disk cache of
    `versions`, and optionally a table file (the shipped table). Returns the merged table of
    `path`."""
    for key, entry in entries.items():
        if not valid_entry(entry):
            raise ValueError(f"invalid entry for {key}: {entry!r}")
        _state["resolved"][key] = entry
        _disk(versions)[key] = entry
    write_table(cache_path(versions), entries, meta={"versions": versions})
    _changed()
    return write_table(path, entries, meta=meta) if path else None


def snapshot(versions):
    """Every entry this process would use, as a JSON-able dict, for install() on the peers:
    the installed table in consistent mode, else shipped < disk cache of `versions` < this
    process."""
    if _state["installed"] is not None:
        entries = {**_state["installed"], **_state["resolved"]}
    else:
        entries = {**_shipped(), **_disk(versions), **_state["resolved"]}
    return {"format": FORMAT, "entries": json.loads(json.dumps(entries))}


def install(snap):
    """Switches to consistent mode with `snap` (rank 0's snapshot()) as the only table.
    Forgets the classes this process resolved before, so no local timing survives."""
    if not isinstance(snap, dict) or snap.get("format") != FORMAT or not isinstance(snap.get("entries"), dict):
        raise ValueError(f"snap must be a dispatch.snapshot() of format {FORMAT}")
    for key, entry in snap["entries"].items():
        parse_key(key)
        if not valid_entry(entry):
            raise ValueError(f"snap has an invalid entry for {key}: {entry!r}")
    _state["installed"] = json.loads(json.dumps(snap["entries"]))
    _state["resolved"] = {}
    _changed()


def fingerprint():
    """A short hash of the installed table (None in local mode): equal on ranks that will
    make equal choices, for the parallel layer's agreement check."""
    if _state["installed"] is None:
        return None
    return hashlib.sha256(json.dumps(_state["installed"], sort_keys=True).encode()).hexdigest()[:16]


def uninstall():
    """Back to local mode."""
    _state["installed"] = None
    _state["resolved"] = {}
    _changed()


def reset(cache_dir=None):
    """Forgets every table read and choice made (tests); `cache_dir` overrides the cache folder."""
    _state.update(installed=None, resolved={}, shipped=None, cache_dir=cache_dir)
    _disk_tables.clear()
    for k in stats:
        stats[k] = 0
    _changed()


def on_change(fn):
    """Calls fn() whenever the tables change (the CUDA wing drops its per-shape plans);
    returns a function that removes fn again."""
    _listeners.append(fn)
    return lambda: _listeners.remove(fn)


def _changed():
    for fn in _listeners:
        fn()


caches.register("dispatch", reset)
