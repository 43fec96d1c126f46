"""Build a synthetic corpus in the VoiceBank-DEMAND layout offline (flite / espeak-ng voices, generated noise).

The corpus has VoiceBank-DEMAND's folders and file names (clean_trainset_wav/p226_001.wav, ...), disjoint
train/test speakers and noise types, and VoiceBank's SNRs, so the recipe runs on it unchanged. Its voices
are synthetic: never report a score on it as a VoiceBank-DEMAND score. Presets: tiny (tests, seconds),
small (demo, about 2 min of training audio), benchmark (about 1 h of training audio, well under a minute),
full (VoiceBank-DEMAND's file counts, about 12 h of audio, several minutes and ~3 GB at 16 kHz).
Explicit size options override the preset's.
"""
from __future__ import annotations

import argparse

from upcycle_se.data.corpus import PRESETS, TEST_NOISES, TRAIN_NOISES, build_corpus


def _csv(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``upcycle-se build-corpus``."""
    parser.add_argument("out_dir", help="corpus root to create")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="sizes (default: tiny)")
    parser.add_argument("--train-speakers", type=int, help="training speakers (overrides the preset)")
    parser.add_argument("--test-speakers", type=int, help="test speakers (overrides the preset)")
    parser.add_argument("--utts", type=int, help="utterances per training speaker (and per test speaker "
                                                 "unless --test-utts is given)")
    parser.add_argument("--test-utts", type=int, help="utterances per test speaker")
    parser.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000; 48000 like the "
                                                                       "distributed corpus)")
    parser.add_argument("--naming", choices=("vb", "28spk"), default="vb",
                        help="folder names: vb (clean_trainset_wav) or 28spk (clean_trainset_28spk_wav)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same options -> same files)")
    parser.add_argument("--train-noises", type=_csv, default=list(TRAIN_NOISES),
                        help=f"comma-separated (default {','.join(TRAIN_NOISES)})")
    parser.add_argument("--test-noises", type=_csv, default=list(TEST_NOISES),
                        help=f"comma-separated, none shared with training (default {','.join(TEST_NOISES)})")
    parser.add_argument("--train-snrs", type=_floats, default=None, help="dB, comma-separated (default 0,5,10,15)")
    parser.add_argument("--test-snrs", type=_floats, default=None,
                        help="dB, comma-separated (default 2.5,7.5,12.5,17.5)")
    parser.add_argument("--workers", type=int, default=None, help="synthesis/mixing threads")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus in OUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Builds the corpus and prints a one-line summary."""
    sizes = dict(PRESETS[args.preset])
    for key, value in (("n_train_speakers", args.train_speakers), ("n_test_speakers", args.test_speakers),
                       ("utts_per_speaker", args.utts), ("test_utts_per_speaker", args.test_utts)):
        if value is not None:
            sizes[key] = value
    if args.utts is not None and args.test_utts is None:
        sizes["test_utts_per_speaker"] = args.utts
    extra = {}
    if args.train_snrs is not None:
        extra["train_snrs"] = args.train_snrs
    if args.test_snrs is not None:
        extra["test_snrs"] = args.test_snrs
    s = build_corpus(args.out_dir, **sizes, sample_rate=args.sample_rate, naming=args.naming, seed=args.seed,
                     train_noises=args.train_noises, test_noises=args.test_noises, workers=args.workers,
                     progress=False if args.no_progress else None, overwrite=args.overwrite, **extra)
    tr, te = s["train"], s["test"]
    print(f"{'reused' if s['reused'] else 'built'} {s['out_dir']}: train {tr['speakers']} speakers, "
          f"{tr['utterances']} files ({tr['seconds'] / 60:.1f} min), test {te['speakers']} speakers, "
          f"{te['utterances']} files ({te['seconds'] / 60:.1f} min), {s['sample_rate']} Hz, {s['naming']} names, "
          f"seed {s['seed']}, {s['build_seconds']:.1f} s (synthetic voices, not VoiceBank-DEMAND)")
    return 0
