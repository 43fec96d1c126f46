#!/usr/bin/env python3
"""Recipe for training Up-Cycle-SENet on VoiceBank-DEMAND (unpaired or paired).

To run this recipe::

    python train.py hparams/upcycle.yaml --data_folder=/path/to/VoiceBankDEMAND
    python train.py hparams/upcycle_paired.yaml --data_folder=/path/to/VoiceBankDEMAND
    python train.py hparams/upcycle_small.yaml --data_folder=/path/to/corpus     # 2-core CPU
    python train.py hparams/upcycle_small.yaml ... --generator_preset=base --init_from=default   # fine-tune
    torchrun --nproc_per_node=4 train.py hparams/upcycle.yaml --data_folder=...  # multi-GPU (DDP)

Data preparation (resampling to 16 kHz, manifests) runs once on the main process; the training loop is
:class:`upcycle_se.brain.UpCycleBrain`. Every problem a user can fix (a bad override, a missing or broken
data file) stops the run with one ``error:`` line and exit code 2.

Authors
 * upcycle-se contributors
"""
import os
import sys

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from upcycle_se.brain import UpCycleBrain
from upcycle_se.data.pipeline import check_crop_fits, make_eval_dataset, make_train_dataset
from upcycle_se.recipe import check_batches, init_generator, load_hparams, one_line_errors, validate_hparams


def dataio_prep(hparams):
    """Builds the training set (random crops, paired or unpaired) and the whole-file valid/test sets."""
    common = {"data_root": hparams["data_folder"], "sample_rate": hparams["sample_rate"],
              "save_folder": hparams["prep_folder"]}
    train = make_train_dataset(hparams["train_annotation"], unpaired=hparams["unpaired"],
                               crop_samples=hparams["crop_samples"], seed=hparams["seed"], **common)
    check_crop_fits(train, hparams["train_annotation"])
    return {
        "train": train,
        "valid": make_eval_dataset(hparams["valid_annotation"], **common),
        "test": make_eval_dataset(hparams["test_annotation"], **common),
    }


if __name__ == "__main__":
    with one_line_errors():
        # Load hyperparameters file with command-line overrides
        hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
        hparams = load_hparams(hparams_file, overrides)
        validate_hparams(hparams, run_opts)

        # Initialize ddp (useful only for multi-GPU DDP training)
        sb.utils.distributed.ddp_init_group(run_opts)

        # Create experiment directory (archives this script and the hparams)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )

        # Data preparation, on the main process only
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from voicebank_prepare import prepare_voicebank  # noqa: E402

        if not hparams["skip_prep"]:
            run_on_main(
                prepare_voicebank,
                kwargs={
                    "data_folder": hparams["data_folder"],
                    "save_folder": hparams["prep_folder"],
                    "valid_speakers": hparams["valid_speakers"],
                    "sample_rate": hparams["sample_rate"],
                },
            )

        datasets = dataio_prep(hparams)
        check_batches(len(datasets["train"]), hparams["train_dataloader_opts"])

        # Fine-tuning: gen_n2c starts from an exported or packaged model (a resumed run then loads its checkpoint)
        if hparams["init_from"] is not None:
            init_generator(hparams["pretrainer"], hparams["init_from"], hparams["generator_preset"],
                           modules=hparams["modules"])

        se_brain = UpCycleBrain(
            modules=hparams["modules"],
            hparams=hparams,
            run_opts=run_opts,
            checkpointer=hparams["checkpointer"],
        )
        se_brain.fit(
            epoch_counter=se_brain.hparams.epoch_counter,
            train_set=datasets["train"],
            valid_set=datasets["valid"],
            train_loader_kwargs=hparams["train_dataloader_opts"],
            valid_loader_kwargs=hparams["valid_dataloader_opts"],
        )

        # Test the best checkpoint by validation PESQ (the test set never chooses one)
        se_brain.evaluate(
            test_set=datasets["test"],
            max_key="pesq",
            test_loader_kwargs=hparams["test_dataloader_opts"],
        )
