"""Process-level CPU settings and the numeric precision of eager inference.

Precision: :func:`resolve_precision` turns a user's ``auto`` / ``fp32`` / ``bf16`` into the dtype the
generator's U-Net runs in (:meth:`upcycle_se.models.UpCycleGenerator.set_unet_dtype`). ``auto`` is bf16
only where the hardware computes bf16 natively (CPU: AMX-BF16 or AVX512-BF16, :func:`cpu_has_bf16`;
CUDA: ``torch.cuda.is_bf16_supported()``) and fp32 elsewhere: without that hardware, oneDNN has no bf16
convolution and torch falls back to a generic kernel several times slower than fp32.

Memory:

PyTorch's CPU allocator does not cache memory: every feature map is a fresh ``malloc``, and glibc serves
large blocks with ``mmap`` and hands them back with ``munmap`` on free. Each forward pass of a large
generator therefore page-faults its whole working set back in, a large share of its CPU time.
:func:`keep_freed_memory` tells glibc to serve large blocks from its heap and to keep freed memory for
reuse, which removes those faults. The cost is a resident set that stays at its high-water mark, which is
why this is an explicit opt-in for inference processes rather than something importing :mod:`upcycle_se`
does. ``python -m benchmarks.speed`` measures the gain (its allocator table).

Authors
 * upcycle-se contributors 2025
"""

import ctypes
import ctypes.util
import sys
from typing import Union

import torch

from upcycle_se.errors import ConfigError

__all__ = ["keep_freed_memory", "cpu_has_bf16", "resolve_precision", "PRECISIONS"]

#: Values of ``--precision`` / the ``precision`` run option.
PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

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


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 in hardware: AMX-BF16 tiles or AVX512-BF16 dot products.

    Read from torch's own CPU feature detection (cpuinfo). ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
    is not the test: it is also True on CPUs where oneDNN only emulates bf16 (plain AVX-512).
    """
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older torch: the private probes behind it
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def resolve_precision(precision: str, device: Union[str, torch.device] = "cpu") -> torch.dtype:
    """The dtype the generator's U-Net runs in for ``precision`` on ``device``.

    Arguments
    ---------
    precision : ``"auto"`` (bf16 where the hardware has it, else fp32), ``"fp32"`` or ``"bf16"``.
    device : where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).

    Raises
    ------
    ConfigError: ``precision`` is not one of :data:`PRECISIONS`.

    Example
    -------
    >>> resolve_precision("fp32")
    torch.float32
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if name != "auto":
        return _DTYPES[name]
    device_type = torch.device(device).type
    if device_type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if device_type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return torch.float32
