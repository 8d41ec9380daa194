"""The header every benchmark table starts with: when, on what, under which load."""

from __future__ import annotations

import datetime
import os
import platform

import sklearn
import torch


def describe() -> str:
    """A markdown line naming the date, CPU model, cores, library versions and the load average."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, "
        f"load average {load} "
        "(1, 5, 15 min) at the start"
    )
