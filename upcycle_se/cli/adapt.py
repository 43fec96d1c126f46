"""Adapt a model to your own noise: fine-tune it on your noisy recordings alone (no clean versions needed).

It cuts the recordings into segments, trains the `unpaired` recipe (recipes/UnpairedFolders) from the
--from model against a clean pile (--clean_folder, or clean speech synthesized offline) for --minutes of
wall-clock time, chooses the checkpoint without a reference (blind SNR gain on held-out segments), exports
it to --out and prints the enhance command to run next. Killed, the same command continues where it
stopped; with more --minutes after it ended, it trains on.
"""
from __future__ import annotations

import argparse


def _minutes(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``upcycle-se adapt``."""
    from upcycle_se.adapt import DEFAULT_CLEAN_MINUTES, DEFAULT_FROM, DEFAULT_MINUTES, MIN_SECONDS

    parser.add_argument("noisy_folder", metavar="NOISY_FOLDER",
                        help=f"your noisy recordings (searched recursively; any rate and format; at least "
                             f"{MIN_SECONDS:g} s of audio, more is better)")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to create")
    parser.add_argument("--from", dest="from_model", default=DEFAULT_FROM, metavar="MODEL",
                        help=f"model to start from: a packaged one (unpaired, default, small) or a model folder "
                             f"(export, import-reference) (default: {DEFAULT_FROM})")
    parser.add_argument("--clean_folder", "--clean-folder", default=None, metavar="DIR",
                        help="clean speech from elsewhere (need not match your recordings); default: "
                             "synthesized offline")
    parser.add_argument("--clean-minutes", type=_minutes, default=DEFAULT_CLEAN_MINUTES, metavar="N",
                        help=f"minutes of clean speech to synthesize without --clean_folder "
                             f"(default {DEFAULT_CLEAN_MINUTES:g})")
    parser.add_argument("--minutes", type=_minutes, default=DEFAULT_MINUTES, metavar="N",
                        help=f"training budget in wall-clock minutes (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="checkpoints, segments, logs and TensorBoard (default: MODEL_DIR.work)")
    parser.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR if it exists")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the data draws (default 1234)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="training precision (default auto: bf16 where the hardware has it)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Adapts, exports and prints what was chosen and the command to enhance with it."""
    from upcycle_se.adapt import adapt

    result = adapt(args.noisy_folder, args.out, from_model=args.from_model, clean_folder=args.clean_folder,
                   clean_minutes=args.clean_minutes, minutes=args.minutes, work_folder=args.work,
                   overwrite=args.overwrite, seed=args.seed, precision=args.precision, threads=args.threads,
                   progress=not args.no_progress)
    for line in result.skipped:
        print(f"upcycle-se adapt: skipped {line}")
    print(f"upcycle-se adapt: {result.noisy_seconds / 60:.1f} min of recordings ({result.n_train_segments} training "
          f"and {result.n_valid_segments} held-out segments), {result.epochs} epoch(s) in "
          f"{result.minutes_spent:.1f} min")
    print(f"upcycle-se adapt: chose epoch {result.epoch} by blind SNR gain on the held-out segments: "
          f"{result.snr_gain:+.2f} dB (the starting model: {result.start_snr_gain:+.2f} dB)")
    if result.snr_gain < result.start_snr_gain:
        print("upcycle-se adapt: warning: the starting model scored higher on the held-out segments; listen to "
              "both, or adapt for longer")
    print(f"upcycle-se adapt: model -> {result.model_dir}")
    print(f"enhance with:\n  {result.enhance_command}")
    return 0
