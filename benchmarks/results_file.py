"""Writing one benchmark's section of ``benchmarks/RESULTS.md`` without touching the others."""
from __future__ import annotations

import os
import platform
from pathlib import Path

#: A new results file holds both sections' markers, so each benchmark finds its place.
EMPTY = ("# Benchmark results\n\n<!-- quality:begin -->\n<!-- quality:end -->\n\n"
         "<!-- speed:begin -->\n<!-- speed:end -->\n")


def replace_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replaces the text from ``begin`` to ``end`` in ``path`` by ``section`` (which carries both markers).

    Appends the section when the markers are missing, creates the file when it is missing, and writes
    atomically (temp file + rename), so an interrupted benchmark never leaves a truncated RESULTS.md.
    """
    text = path.read_text() if path.is_file() else EMPTY
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows where that is missing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
