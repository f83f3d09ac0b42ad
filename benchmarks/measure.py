"""Measurement helpers shared by the benchmarks."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux ``VmHWM``).

    ``VmHWM`` starts afresh at ``exec``, whereas ``ru_maxrss`` of a forked-and-exec'd child
    keeps the parent's resident size at fork time as a floor.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
