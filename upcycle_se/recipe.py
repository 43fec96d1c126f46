"""The body of a training recipe, shared by the recipes of every corpus.

A recipe's ``train.py`` only names its data preparation function and calls :func:`run_recipe`, which does
what SpeechBrain recipes do (parse arguments, load the HyperPyYAML hparams, create the experiment folder,
prepare the data on the main process, build the datasets, fit, then test the best checkpoint) and turns
every problem a user can fix (a bad override, a missing data folder, a corrupt file) into one line on
stderr and exit code 2 before any training time is spent.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Dict, List, Optional

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml

from upcycle_se.errors import ConfigError, UserError
from upcycle_se.metrics.signals import SAMPLE_RATE as METRIC_RATE

logger = logging.getLogger(__name__)


class _TagBlindLoader(yaml.SafeLoader):
    """Reads a HyperPyYAML file as plain YAML: every ``!tag`` node becomes None."""


_TagBlindLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def check_override_types(hparams_file: str, overrides) -> None:
    """Raises a one-line :class:`ConfigError` for an override whose type cannot be the key's.

    A key whose plain value in ``hparams_file`` is a number must be overridden by a number (an int key by
    an int). Checked before loading: otherwise ``--n_epochs=abc`` fails deep inside a ``!ref`` expression
    that uses it (``invalid literal for int(): 'abc + 4'``).
    """
    given = yaml.safe_load(overrides) if isinstance(overrides, str) else overrides
    if not isinstance(given, dict):
        return
    with open(hparams_file, encoding="utf-8") as fin:
        defaults = yaml.load(fin, Loader=_TagBlindLoader) or {}
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        wanted = int if isinstance(default, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "an integer" if wanted is int else "a number"
            raise ConfigError(f"{key}={value!r}: must be {kind} (like the default, {default!r})")


def load_hparams(hparams_file: str, overrides) -> dict:
    """Loads a HyperPyYAML file with overrides, turning every failure into a one-line :class:`ConfigError`."""
    try:
        check_override_types(hparams_file, overrides)
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except FileNotFoundError as err:
        raise ConfigError(f"{err.filename}: no such hparams file") from None
    except UserError:
        raise
    except Exception as err:  # ruamel / HyperPyYAML / constructors raise many types
        msg = " ".join(str(err).split())
        raise ConfigError(f"{hparams_file}: bad hparams or override: {msg[:300]}") from None


def validate_hparams(hparams: dict) -> None:
    """Checks the values a typo can make absurd, each with a one-line :class:`ConfigError`."""
    def positive(key, kind=(int, float)):
        value = hparams.get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            raise ConfigError(f"{key}={value!r}: must be a positive {'integer' if kind is int else 'number'}")

    positive("lr")
    for key in ("batch_size", "crop_samples", "sample_rate"):
        positive(key, int)
    for key in ("n_epochs", "n_epochs_decay"):
        value = hparams.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{key}={value!r}: must be an integer >= 0")
    rate = hparams.get("sample_rate")
    if rate is not None and rate != METRIC_RATE and (hparams.get("valid_metrics") or hparams.get("test_metrics")):
        raise ConfigError(f"sample_rate={rate!r}: the validation and test metrics (wide-band PESQ, STOI, ...) are "
                          f"defined at {METRIC_RATE} Hz only; keep sample_rate={METRIC_RATE} (the data is "
                          "resampled to it)")
    unpaired = hparams.get("unpaired")
    if unpaired is not None and unpaired not in ("shuffle", "disjoint", "paired"):
        raise ConfigError(f"unpaired={unpaired!r}: must be one of shuffle, disjoint, paired")
    loss = hparams.get("loss", {})
    if loss.get("loss_type") in ("l1gan", "l1") and unpaired not in (None, "paired"):
        raise ConfigError(f"loss_type={loss.get('loss_type')} needs paired data: set unpaired=paired")


def check_batches(n_train: int, loader_opts: dict) -> None:
    """Raises ConfigError when an epoch would have no training batch (``drop_last`` with fewer training
    items than ``batch_size``): every epoch would only validate, and training would run for nothing."""
    batch_size = loader_opts.get("batch_size", 1)
    if loader_opts.get("drop_last") and isinstance(batch_size, int) and n_train < batch_size:
        raise ConfigError(f"batch_size={batch_size} is larger than the training set ({n_train} noisy file(s)); "
                          "with drop_last no batch would ever be trained: lower batch_size")


def one_line(err: UserError) -> str:
    """The error's message on one line. A DataLoader worker re-raises an error in the main process with the
    worker's traceback as its message; the original message is the traceback's last line."""
    lines = str(err).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        prefix = f"{type(err).__module__}.{type(err).__name__}: "
        return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else lines[-1]
    return " ".join(line.strip() for line in lines)


def run_recipe(argv: List[str], prepare: Callable[..., None], prepare_kwargs: Callable[[dict], Dict]) -> int:
    """Runs a whole recipe; returns the exit code.

    Arguments
    ---------
    argv : the command line after the script name (``hparams.yaml --key=value ...``).
    prepare : the corpus's data preparation function (run on the main process only).
    prepare_kwargs : builds ``prepare``'s keyword arguments from the loaded hparams.
    """
    from upcycle_se.brain import UpCycleBrain
    from upcycle_se.data.pipeline import dataio_prep

    try:
        hparams_file, run_opts, overrides = sb.parse_arguments(argv)
        hparams = load_hparams(hparams_file, overrides)
        validate_hparams(hparams)
        sb.utils.distributed.ddp_init_group(run_opts)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
        sb.utils.distributed.run_on_main(prepare, kwargs=prepare_kwargs(hparams))
        datasets = dataio_prep(hparams)
        check_batches(len(datasets["train"]), hparams.get("train_dataloader_opts") or {})

        brain = UpCycleBrain(
            modules=hparams["modules"], hparams=hparams, run_opts=run_opts, checkpointer=hparams["checkpointer"]
        )
        brain.fit(
            brain.hparams.epoch_counter,
            train_set=datasets["train"],
            valid_set=datasets["valid"],
            train_loader_kwargs=hparams["train_dataloader_opts"],
            valid_loader_kwargs=hparams["valid_dataloader_opts"],
        )
        brain.evaluate(datasets["test"], max_key="pesq", test_loader_kwargs=hparams["test_dataloader_opts"])
    except UserError as err:
        message = one_line(err)
        if logger.hasHandlers():  # the experiment's log; before logging is set up it would repeat on stderr
            logger.error(message)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
