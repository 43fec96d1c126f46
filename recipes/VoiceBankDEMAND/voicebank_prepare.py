#!/usr/bin/env python3
"""VoiceBank-DEMAND data preparation for the Up-Cycle-SENet recipe.

Writes ``train.json``, ``valid.json`` (held-out training speakers, p226 and p287 by default) and
``test.json`` into ``save_folder``, resampling the distributed 48 kHz corpus once into
``<save_folder>/wav16k/``. The work is done by :func:`upcycle_se.data.prepare.prepare_voicebank`; this
file keeps the recipe's usual layout (``from voicebank_prepare import prepare_voicebank`` in train.py).
For other corpora see :func:`upcycle_se.data.prepare.prepare_folders`.

Usage::

    python voicebank_prepare.py /path/to/VoiceBankDEMAND results/prep [--valid-speakers p226 p287]
"""
import argparse
import logging
import sys

from upcycle_se.data.prepare import prepare_voicebank
from upcycle_se.errors import UserError

__all__ = ["prepare_voicebank"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder", help="folder holding clean_trainset_(28spk_)wav/, noisy_..., *_testset_wav/")
    parser.add_argument("save_folder", help="where the manifests and the 16 kHz cache are written")
    parser.add_argument("--valid-speakers", nargs="+", default=None, help="training speakers held out for validation")
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = prepare_voicebank(args.data_folder, args.save_folder, valid_speakers=args.valid_speakers,
                                sample_rate=args.sample_rate)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
