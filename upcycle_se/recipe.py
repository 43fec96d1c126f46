"""Reusable pieces of the training recipes (``recipes/*/train.py``).

Each recipe's ``train.py`` holds the SpeechBrain recipe body (parse the arguments, load the hparams, create
the experiment folder, prepare the data on the main process, build the datasets and the Brain, fit,
evaluate). This module gives it what every recipe needs: :func:`load_hparams` and :func:`validate_hparams`
(one-line errors for a bad override, before any training time is spent), :func:`check_batches`,
:func:`init_generator` (``--init_from``: fine-tune an exported model) and :func:`one_line_errors`, which
turns every problem a user can fix (a bad override, a missing data folder, a corrupt file) into one line on
stderr and exit code 2 instead of a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Optional

import yaml
from hyperpyyaml import load_hyperpyyaml

from upcycle_se.errors import ConfigError, UserError
from upcycle_se.metrics.signals import SAMPLE_RATE as METRIC_RATE

logger = logging.getLogger(__name__)


class _TagBlindLoader(yaml.SafeLoader):
    """Reads a HyperPyYAML file as plain YAML: every ``!tag`` node becomes None."""


_TagBlindLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: Hparams keys that were removed (no shipped model used them, and they measured no gain), each with what is
#: left and where its measurement is kept. Giving one is a one-line error instead of HyperPyYAML's
#: "override not found".
REMOVED_KEYS = {
    "c2n_mode": "the clean->noisy generator maps the spectrum, as the paper's; c2n_mode=residual measured no gain "
                "(docs/experiments/unpaired.md, budget `unpaired`, fp32 run)",
    "remix_teacher": "the remix term takes its noise from the generator being trained; remix_teacher=ema measured "
                     "no gain (docs/experiments/unpaired.md, budget `unpaired_ema`)",
    "gan_mode": "the adversarial loss is LSGAN, the paper's; the hinge and vanilla variants were never measured "
                "(docs/experiments/README.md)",
}


def check_removed_keys(given: dict, where: str = "") -> None:
    """Raises a one-line :class:`ConfigError` when ``given`` (overrides, or a file's top-level keys) names a
    key of :data:`REMOVED_KEYS`."""
    for key in given:
        if key in REMOVED_KEYS:
            raise ConfigError(f"{where}{key} was removed: {REMOVED_KEYS[key]}")


def check_override_types(hparams_file: str, overrides) -> None:
    """Raises a one-line :class:`ConfigError` for an override whose type cannot be the key's, or that names a
    removed key (:data:`REMOVED_KEYS`).

    A key whose plain value in ``hparams_file`` is a number must be overridden by a number (an int key by
    an int). Checked before loading: otherwise ``--n_epochs=abc`` fails deep inside a ``!ref`` expression
    that uses it (``invalid literal for int(): 'abc + 4'``).
    """
    try:  # a file or override plain YAML cannot read is left to HyperPyYAML (and its own error)
        given = yaml.safe_load(overrides) if isinstance(overrides, str) else overrides
        with open(hparams_file, encoding="utf-8") as fin:
            defaults = yaml.load(fin, Loader=_TagBlindLoader)
    except yaml.YAMLError:
        return
    if isinstance(given, dict):
        check_removed_keys(given)
    if isinstance(defaults, dict):
        check_removed_keys(defaults, f"{hparams_file}: ")
    if not isinstance(given, dict) or not isinstance(defaults, dict):
        return
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        wanted = int if isinstance(default, int) else (int, float)
        if wanted is not int and isinstance(value, str) and _is_float(value):
            continue  # YAML 1.1 reads 1e-12 as a string; HyperPyYAML (YAML 1.2) reads it as a number
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


def validate_hparams(hparams: dict, run_opts: Optional[dict] = None) -> None:
    """Checks the values a typo can make absurd, each with a one-line :class:`ConfigError`.

    ``run_opts`` (from ``sb.parse_arguments``) are checked too where the Brain cannot honour them.
    """
    # UpCycleBrain.fit_batch steps two optimizers itself on every batch; SpeechBrain's accumulation lives
    # in the fit_batch it replaces, so any other factor would be silently ignored.
    for source in (hparams, run_opts or {}):
        factor = source.get("grad_accumulation_factor")
        if factor is not None and factor != 1:
            raise ConfigError(f"grad_accumulation_factor={factor!r}: not supported by the cycle-GAN training step "
                              "(two optimizers, one step per batch); raise batch_size instead")
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
    from upcycle_se.models.attenuation import check_max_attenuation_db

    check_max_attenuation_db(hparams.get("max_attenuation_db"))  # test-time, but checked before training


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


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Runs a recipe body; a :class:`UserError` becomes ``error: <one line>`` on stderr and exit code 2.

    Example (the body of a ``train.py``)::

        if __name__ == "__main__":
            with one_line_errors():
                hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
                ...
    """
    try:
        yield
    except UserError as err:
        message = one_line(err)
        if logger.hasHandlers():  # the experiment's log; before logging is set up it would repeat on stderr
            logger.error(message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def load_state_strict(module, path) -> None:
    """A ``Pretrainer`` load hook: the whole state_dict or an error (SpeechBrain's default only warns about
    missing keys, which would fine-tune a half-initialised generator without a word)."""
    import torch

    module.load_state_dict(torch.load(path, map_location="cpu"), strict=True)


def init_generator(pretrainer, init_from: str, generator_preset: str, modules: Optional[dict] = None) -> None:
    """Loads the networks of an exported, packaged or imported model folder (``--init_from``).

    The noisy->clean generator always (``generator.ckpt``); with ``modules`` given, also the clean->noisy
    generator and the discriminators where the folder holds them (``gen_c2n.ckpt``, ``disc_noisy.ckpt``,
    ``disc_clean.ckpt``, as ``upcycle-se import-reference`` writes them), so that all four are fine-tuned.

    Arguments
    ---------
    pretrainer : a SpeechBrain ``Pretrainer`` whose ``gen_n2c`` loadable is the recipe's generator and whose
        hook is :func:`load_state_strict` (see ``recipes/UnpairedFolders/hparams/upcycle.yaml``); its paths are
        set here to the resolved model's files.
    init_from : the model folder (made by ``upcycle-se export`` or ``import-reference``, or
        ``upcycle_se/pretrained/<name>``), or the name of a packaged model (``default``, ``unpaired``,
        ``small``; a folder of that name wins, as in ``upcycle-se enhance --model``).
    generator_preset : the recipe's preset, named in the error when the model's generator has another size.
    modules : the recipe's ``modules`` (``gen_c2n``, ``disc_noisy``, ``disc_clean`` are looked up in it).
    """
    from speechbrain.utils.distributed import run_on_main

    from upcycle_se.inference import PACKAGED_MODELS, packaged_model_dir

    folder = Path(init_from).expanduser()
    if not folder.is_dir() and init_from in PACKAGED_MODELS:
        folder = packaged_model_dir(init_from)
    ckpt = folder / "generator.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"init_from={init_from}: no generator.ckpt there (give a folder made by "
                          f"`upcycle-se export`, or a packaged model: {', '.join(PACKAGED_MODELS)})")
    paths = {"gen_n2c": str(ckpt)}
    for name in ("gen_c2n", "disc_noisy", "disc_clean"):
        if modules is not None and name in modules and (folder / f"{name}.ckpt").is_file():
            paths[name] = str(folder / f"{name}.ckpt")
    extra = {name: modules[name] for name in paths if name != "gen_n2c"}
    pretrainer.add_loadables(extra)
    pretrainer.add_custom_hooks({name: load_state_strict for name in extra})
    pretrainer.add_paths(paths)
    run_on_main(pretrainer.collect_files)
    try:
        pretrainer.load_collected()
    except RuntimeError as err:  # load_state_dict: missing keys or other shapes
        first = " ".join(str(err).split())[:200]
        if "Discriminator" in first:
            raise ConfigError(f"init_from={init_from}: its discriminators do not fit this recipe's (set "
                              f"--discriminator_preset=paper --n_scales=1; {first})") from None
        raise ConfigError(f"init_from={init_from}: its generator does not fit generator_preset={generator_preset} "
                          f"(set --generator_preset/--mask_type to the model's; {first})") from None
    logger.info("Fine-tuning from %s (%s; the other networks start from scratch)", folder, ", ".join(paths))
