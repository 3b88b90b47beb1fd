"""This process's resident memory from /proc/self/status (Linux); ru_maxrss where that is missing."""

import resource
import sys


def _status_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mib():
    """Resident set size now, MiB (None off Linux)."""
    return _status_mib("VmRSS")


def peak_rss_mib():
    """Peak resident set size since start (or since :func:`reset_peak`), MiB."""
    peak = _status_mib("VmHWM")
    if peak is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = kib / 1024 / (1024 if sys.platform == "darwin" else 1)
    return peak


def reset_peak():
    """Restart the peak from the current RSS (Linux >= 4.0); returns whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
