"""Process-level CPU settings that speed up eager inference of the generators.

PyTorch's CPU allocator does not cache memory: every feature map is a fresh ``malloc``, and glibc serves
large blocks with ``mmap`` and hands them back with ``munmap`` on free. Each forward pass of the paper
generator therefore page-faults its whole working set back in (about 0.5 M minor faults, a third of the
CPU time of a 10 s input on the development machine). :func:`keep_freed_memory` tells glibc to serve
large blocks from its heap and to keep freed memory for reuse, which removes those faults. The cost is a
resident set that stays at its high-water mark (about +20 % peak RSS measured on the paper generator),
which is why this is an explicit opt-in for inference processes rather than something importing
:mod:`upcycle_se` does. ``benchmarks/speed.py`` measures the gain.

Authors
 * upcycle-se contributors 2025
"""

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Makes glibc's ``malloc`` keep and reuse freed memory (no ``mmap``/``munmap`` per tensor).

    Affects the whole process from the call on. Returns True when applied, False where it does not
    apply (not Linux, or a C library without ``mallopt``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
