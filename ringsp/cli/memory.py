"""Peak memory of one rank: the accelerator allocator's peaks, or the process's peak RSS on CPU.

On an accelerator, "reserved" is what the caching allocator holds from the driver and
"allocated" what live tensors use; overhead = reserved - allocated is the allocator's
fragmentation and cache, and overhead ratio = overhead / reserved. On CPU there is no
such allocator: the peak resident set size of the process (since it started, so model
loading is included) is reported instead and the allocator fields are None.
"""
import resource
import sys

import torch

GIB = float(1 << 30)


def reset_peak(device):
    """Starts a new peak window on an accelerator (no-op on CPU, whose peak RSS cannot be reset)."""
    device = torch.device(device)
    if device.type != "cpu":
        torch.get_device_module(device).reset_peak_memory_stats(device)


def peak_memory(device, rank=0):
    """{rank, device, kind, peak_reserved_gib, peak_allocated_gib, overhead_gib, overhead_ratio,
    peak_rss_gib}; fields that do not apply are None."""
    device = torch.device(device)
    entry = {"rank": rank, "device": str(device), "kind": device.type, "peak_reserved_gib": None,
             "peak_allocated_gib": None, "overhead_gib": None, "overhead_ratio": None,
             "peak_rss_gib": _peak_rss_bytes() / GIB}
    if device.type != "cpu":
        mod = torch.get_device_module(device)
        reserved = mod.max_memory_reserved(device) / GIB
        allocated = mod.max_memory_allocated(device) / GIB
        entry.update(peak_reserved_gib=reserved, peak_allocated_gib=allocated)
        entry.update(derived_memory(entry))
    return entry


def derived_memory(entry):
    """overhead and overhead ratio, computed from the entry's peaks (None where they are None)."""
    reserved, allocated = entry.get("peak_reserved_gib"), entry.get("peak_allocated_gib")
    if reserved is None or allocated is None:
        return {"overhead_gib": None, "overhead_ratio": None}
    overhead = reserved - allocated
    return {"overhead_gib": overhead, "overhead_ratio": overhead / reserved if reserved > 0 else 0.0}


def _peak_rss_bytes():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
