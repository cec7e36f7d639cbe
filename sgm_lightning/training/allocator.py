"""Keep freed memory in the process (glibc's ``malloc``), so training and sampling steps stop
page-faulting (``sgm train`` unless ``keep_freed_memory=false``, and ``sgm sample``).

A training step allocates its activations in the forward pass and frees them in the backward.
glibc gives the freed top of its heap back to the kernel once it exceeds the trim threshold, and
serves blocks over its mmap threshold with fresh mappings, so each step touches its whole
activation memory anew: about 250,000 minor page faults and 1-3 s of system time per NCSN++
CIFAR-10 step at batch 16 on the 2-core machine of docs/performance.md, where the step computes
for 8-10 s. With the heap kept (trim threshold at its maximum, mmap threshold fixed at glibc's
64-bit ceiling of 32 MiB) the steps after the second one fault about once. Peak memory is what the
step needs anyway; only the return of the memory to the kernel between steps is given up.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)


def glibc_mallopt():
    """glibc's ``mallopt`` as a ctypes function, or None (other OSes, musl and other libcs)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False (and nothing changed) without glibc."""
    mallopt = glibc_mallopt()
    return mallopt is not None and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) \
        and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
