"""How much CPU other processes took while we measured: the machine's busy time (/proc/stat)
minus this process's own and its finished children's, as a fraction of all cores."""

import os
import time


def _busy_seconds():
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Started on creation; ``others()`` is the share of the machine other processes used since."""

    def __init__(self):
        self.start = (_busy_seconds(), _own_seconds(), time.monotonic())

    def others(self):
        busy, own, wall = _busy_seconds(), _own_seconds(), time.monotonic()
        if busy is None or self.start[0] is None:
            return None
        other = (busy - self.start[0]) - (own - self.start[1])
        return max(0.0, other / ((wall - self.start[2]) * os.cpu_count()))
