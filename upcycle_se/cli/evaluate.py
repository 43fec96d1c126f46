"""Score enhanced audio against clean references: PESQ (wide-band), STOI, CSIG, CBAK, COVL, segSNR.

Files are matched by name without extension; only names found in every given folder are scored, and the
others are reported. Every file is read at its own rate and resampled to 16 kHz (wide-band PESQ is defined
only at 16 kHz, and VoiceBank-DEMAND ships at 48 kHz), with one warning per rate; --no-resample refuses
such files instead. A pair whose lengths differ by at most --max-length-diff seconds (default 0.1) is
truncated to the shorter, with a warning; a larger difference is an error. Unreadable, stereo, empty or
non-finite files stop the evaluation with an error naming the file. A measure undefined for a file (silent
signal, shorter than 0.25 s) is "nan" in the CSV, left out of the mean, and counted in the table.

With --noisy DIR the noisy input is scored against the same clean file, the table gets a "noisy" column
and the CSV gets noisy_<metric> columns after the enhanced ones. CSIG/CBAK/COVL use wide-band PESQ (as the
VoiceBank-DEMAND literature does), not the raw narrow-band score of the original composite.m. The table
shows mean ± sample standard deviation over files.
"""
from __future__ import annotations

import argparse
import sys

from upcycle_se.errors import UserError
from upcycle_se.metrics.folders import evaluate_folders
from upcycle_se.metrics.signals import MAX_LEN_DIFF_S
from upcycle_se.metrics.stats import ALL_METRICS, DEFAULT_METRICS, check_metrics

#: How many per-file warnings are printed before the rest are only counted.
MAX_NOTES_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the evaluate options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--clean", required=True, metavar="DIR", help="folder of clean reference files")
    parser.add_argument("--enhanced", required=True, metavar="DIR", help="folder of enhanced files")
    parser.add_argument("--noisy", metavar="DIR", help="folder of the noisy inputs, scored too for comparison")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--csv", metavar="PATH",
                        help="write per-file scores here (columns file,pesq,stoi,csig,cbak,covl,ssnr"
                             "[,noisy_pesq,...])")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                        help=f"comma-separated, among {','.join(ALL_METRICS)} (default: %(default)s)")
    parser.add_argument("--no-resample", action="store_true",
                        help="refuse files that are not at 16 kHz instead of resampling them")
    parser.add_argument("--max-length-diff", type=float, default=MAX_LEN_DIFF_S, metavar="SECONDS",
                        help="largest clean/enhanced length difference truncated rather than refused "
                             "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation; prints the summary table on stdout and warnings on stderr. Returns 0."""
    try:
        metrics = check_metrics([m.strip() for m in args.metrics.split(",") if m.strip()])
    except ValueError as err:
        raise UserError(f"--metrics: {err}") from None
    if args.max_length_diff < 0:
        raise UserError(f"--max-length-diff must be >= 0, got {args.max_length_diff}")
    result = evaluate_folders(args.clean, args.enhanced, args.noisy, metrics=metrics, n_jobs=args.jobs,
                              resample=not args.no_resample, max_len_diff_s=args.max_length_diff,
                              progress=not args.quiet)
    for note in result.notes[:MAX_NOTES_SHOWN]:
        print(f"upcycle-se evaluate: warning: {note}", file=sys.stderr)
    if len(result.notes) > MAX_NOTES_SHOWN:
        print(f"upcycle-se evaluate: warning: ... and {len(result.notes) - MAX_NOTES_SHOWN} more",
              file=sys.stderr)
    if args.csv:
        result.write_csv(args.csv)
    compared = "noisy and enhanced" if args.noisy else "enhanced"
    print(f"{len(result.files)} files: {compared} vs clean (mean ± std)")
    print(result.table())
    if args.csv:
        print(f"per-file scores: {args.csv}")
    return 0
