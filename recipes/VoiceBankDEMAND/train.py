#!/usr/bin/env python3
"""Recipe for training Up-Cycle-SENet on VoiceBank-DEMAND (unpaired or paired).

To run this recipe::

    python train.py hparams/upcycle.yaml --data_folder=/path/to/VoiceBankDEMAND
    python train.py hparams/upcycle_paired.yaml --data_folder=/path/to/VoiceBankDEMAND
    python train.py hparams/upcycle_small.yaml --data_folder=/path/to/corpus     # 2-core CPU
    torchrun --nproc_per_node=4 train.py hparams/upcycle.yaml --data_folder=...  # multi-GPU (DDP)

Data preparation (resampling to 16 kHz, manifests) runs once on the main process; the training loop is
:class:`upcycle_se.brain.UpCycleBrain`, driven by :func:`upcycle_se.recipe.run_recipe`.

Authors
 * upcycle-se contributors
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from voicebank_prepare import prepare_voicebank  # noqa: E402

from upcycle_se.recipe import run_recipe  # noqa: E402


def prepare_kwargs(hparams: dict) -> dict:
    """Arguments of ``prepare_voicebank`` taken from the hparams."""
    return {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prep_folder"],
        "valid_speakers": hparams.get("valid_speakers"),
        "sample_rate": hparams["sample_rate"],
    }


if __name__ == "__main__":
    sys.exit(run_recipe(sys.argv[1:], prepare_voicebank, prepare_kwargs))
