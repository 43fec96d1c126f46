#!/usr/bin/env python3
"""Recipe for training Up-Cycle-SENet on your own unpaired data: a noisy folder and a clean folder.

To run this recipe::

    python train.py hparams/upcycle.yaml --noisy_folder=DIR --clean_folder=DIR
    python train.py hparams/upcycle_small.yaml --noisy_folder=DIR --clean_folder=DIR      # 2-core CPU
    python train.py hparams/upcycle.yaml --noisy_folder=DIR --clean_folder=DIR \\
        --valid_noisy_folder=DIR --valid_clean_folder=DIR        # small paired set: choose by PESQ
    python train.py hparams/upcycle_small.yaml ... --init_from=../../upcycle_se/pretrained/small  # fine-tune

The folders may hold any file names, nested folders, any sample rate and any format soundfile reads; files
not at 16 kHz are resampled once. Without paired validation folders a fraction of the noisy files is held
out and the checkpoint is chosen by a reference-free criterion (README.md, :mod:`upcycle_se.validation`).
Every problem a user can fix stops the run with one ``error:`` line and exit code 2.

Authors
 * upcycle-se contributors
"""
import sys

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from upcycle_se.brain import UpCycleBrain
from upcycle_se.data.folders import dataio_prep, prepare_kwargs
from upcycle_se.data.prepare import prepare_folders
from upcycle_se.recipe import check_batches, init_generator, load_hparams, one_line_errors, validate_hparams


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
        if not hparams["skip_prep"]:
            run_on_main(prepare_folders, kwargs=prepare_kwargs(hparams))

        datasets = dataio_prep(hparams)
        check_batches(len(datasets["train"]), hparams["train_dataloader_opts"])

        # Fine-tuning: gen_n2c starts from an exported model (a resumed run then loads its checkpoint)
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

        # Test the best checkpoint (by validation PESQ, or by snr_gain without a reference)
        if datasets["test"] is not None:
            se_brain.evaluate(
                test_set=datasets["test"],
                max_key="pesq" if datasets["valid"].has_reference else "snr_gain",
                test_loader_kwargs=hparams["test_dataloader_opts"],
            )
