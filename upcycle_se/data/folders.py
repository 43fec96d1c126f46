"""Data of the ``recipes/UnpairedFolders`` recipe: a noisy folder and a clean folder that need not match.

The recipe's ``train.py`` and ``upcycle-se adapt`` (:mod:`upcycle_se.adapt`) both prepare and load their
data with these two functions, so the command is a door onto the recipe, not a second pipeline.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

from speechbrain.dataio.dataset import DynamicItemDataset

from upcycle_se.data.pipeline import check_crop_fits, make_eval_dataset, make_train_dataset
from upcycle_se.data.prepare import file_as_speaker


def prepare_kwargs(hparams: Mapping) -> dict:
    """Arguments of ``prepare_folders``: unpaired training folders; held-out noisy files for validation
    unless paired validation folders are given (each file is its own "speaker": no labels needed)."""
    kwargs = {
        "clean_dir": hparams["clean_folder"],
        "noisy_dir": hparams["noisy_folder"],
        "save_folder": hparams["prep_folder"],
        "paired": False,
        "valid_clean_dir": hparams["valid_clean_folder"],
        "valid_noisy_dir": hparams["valid_noisy_folder"],
        "test_clean_dir": hparams["test_clean_folder"],
        "test_noisy_dir": hparams["test_noisy_folder"],
        "sample_rate": hparams["sample_rate"],
        "speaker_fn": file_as_speaker,
    }
    if hparams["valid_noisy_folder"] is None and hparams["valid_clean_folder"] is None:
        kwargs["valid_fraction"] = hparams["valid_fraction"]
    return kwargs


def dataio_prep(hparams: Mapping) -> Dict[str, Optional[DynamicItemDataset]]:
    """Training crops (noisy and clean drawn independently), whole-file validation and optional test sets."""
    common = {"sample_rate": hparams["sample_rate"], "save_folder": hparams["prep_folder"]}
    train = make_train_dataset(hparams["train_annotation"], unpaired=hparams["unpaired"],
                               crop_samples=hparams["crop_samples"], seed=hparams["seed"], **common)
    check_crop_fits(train, hparams["train_annotation"])
    datasets = {"train": train, "valid": make_eval_dataset(hparams["valid_annotation"], **common), "test": None}
    if hparams["test_noisy_folder"] is not None:
        datasets["test"] = make_eval_dataset(hparams["test_annotation"], **common)
    return datasets
