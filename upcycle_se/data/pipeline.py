"""Datasets that feed the cycle-GAN Brain from the manifests of :mod:`upcycle_se.data.prepare`.

Every dataset is a SpeechBrain :class:`~speechbrain.dataio.dataset.DynamicItemDataset`, so ``Brain.fit``
/ ``Brain.evaluate`` collate it with :class:`~speechbrain.dataio.batch.PaddedBatch` by default. A batch has

- ``batch.id``: list of ``B`` utterance ids (the noisy side's, for training);
- ``batch.noisy_sig``, ``batch.clean_sig``: ``(wav [B, T] float32, rel_lens [B])``;
- training batches also ``batch.clean_id``: the id of the clean utterance each crop came from.

Training (:func:`make_train_dataset`): one epoch is one pass over the noisy training files; each item is a
random crop of ``crop_samples`` (zero-padded at the end when the file is shorter, so every crop has
exactly ``crop_samples`` samples and ``rel_lens`` are all 1). The clean side depends on ``unpaired``:

- ``"shuffle"`` (the paper's setting): the clean crop comes from a random *other* training utterance,
  drawn independently of the noisy one, at its own random offset;
- ``"disjoint"``: speakers found on both sides are split into two halves by ``seed``; noisy crops come only
  from one half and clean crops only from the other, so no utterance (or speaker) is seen in both domains;
- ``"paired"``: the matched clean file, cropped at the same offset as the noisy one (supervised baseline).

Randomness is reproducible: each draw is seeded by ``(seed, epoch, index, how often this item was drawn
in this epoch)``, so it does not depend on which DataLoader worker fetches an item, differs between items
and between epochs, and two runs with the same seed draw the same crops. Call
``train_set.set_epoch(epoch)`` at the start of each epoch (e.g. in ``on_stage_start``) to make a resumed
run draw exactly what the uninterrupted one would have; without it the draws still change every epoch
(the per-item draw count, and in DataLoader workers the loader's per-epoch base seed, enter the seed).

Evaluation (:func:`make_eval_dataset`): whole files, noisy and clean trimmed to the same length; the
clean signal is only the metrics' reference. A validation manifest without clean files (unpaired data
with no paired validation folders) gives batches with ``id`` and ``noisy_sig`` only, and the dataset's
``has_reference`` is False.

Audio is read with :mod:`upcycle_se.audio` (soundfile) and resampled on the fly if a manifest points at a
file that is not at ``sample_rate`` (prepared manifests never do).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from speechbrain.dataio.dataio import load_data_json
from speechbrain.dataio.dataset import DynamicItemDataset

from upcycle_se.audio import load_mono
from upcycle_se.data.prepare import OPTIONS_FILE
from upcycle_se.errors import ConfigError, DataError, first_line

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

UNPAIRED_MODES = ("shuffle", "disjoint", "paired")
DEFAULT_CROP_SAMPLES = 32000  # 2 s at 16 kHz
DEFAULT_SEED = 1234
_SIDE_PREFIXES = ("noisy/", "clean/")  # ids of one-sided entries in an unpaired train.json


def load_manifest(manifest_path: PathLike, data_root: Optional[PathLike] = None,
                  save_folder: Optional[PathLike] = None) -> Dict[str, dict]:
    """Reads a manifest and fills in its ``{data_root}`` and ``{save_folder}`` placeholders.

    Arguments
    ---------
    manifest_path : a JSON manifest written by :mod:`upcycle_se.data.prepare` (or in its format).
    data_root : the corpus folder; default the one recorded in ``prepare_options.json`` beside the manifest.
    save_folder : the folder holding the resampling cache; default the manifest's folder.

    Returns
    -------
    ``{id: entry}`` with real paths.
    """
    path = Path(manifest_path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run the data preparation first)")
    if data_root is None:
        data_root = _recorded_data_root(path.parent)
    replacements = {"save_folder": str(save_folder if save_folder is not None else path.parent)}
    if data_root is not None:
        replacements["data_root"] = str(data_root)
    try:
        entries = load_data_json(str(path), replacements)
    except ValueError as err:  # JSONDecodeError, or a lone brace in a path
        raise DataError(f"{path}: not a valid manifest ({first_line(err)})") from None
    except KeyError as err:
        raise DataError(f"{path}: uses the placeholder {{{err.args[0]}}} but no value was given for it "
                        f"(pass data_root=..., the corpus folder)") from None
    if not isinstance(entries, dict) or not entries:
        raise DataError(f"{path}: manifest is empty")
    for uid, entry in entries.items():
        if not isinstance(entry, dict) or not ("noisy_wav" in entry or "clean_wav" in entry):
            raise DataError(f"{path}: entry {uid!r} has neither noisy_wav nor clean_wav")
    return entries


class CycleTrainDataset(DynamicItemDataset):
    """Random fixed-length crops of noisy and (paired or unpaired) clean training speech.

    Arguments
    ---------
    entries : manifest entries with real paths (:func:`load_manifest`): paired entries (``noisy_wav`` and
        ``clean_wav``) and/or one-sided ones (only one of them).
    unpaired : ``"shuffle"`` | ``"disjoint"`` | ``"paired"`` (see the module docstring).
    crop_samples : crop length in samples (both sides).
    seed : seeds the draws and, for ``"disjoint"``, the speaker split.
    sample_rate : rate the signals are returned at.
    name : shown in error messages (the manifest's path).

    Items: ``{"id", "noisy_sig": [crop_samples], "clean_sig": [crop_samples], "clean_id"}``.
    Attributes ``noisy_speakers`` / ``clean_speakers``: the speakers each side draws from; ``longest``:
    ``{"noisy": (id, seconds), "clean": (id, seconds)}``, each side's longest file by the manifest's
    ``length`` (None for a side whose entries have no ``length``).
    """

    def __init__(self, entries: Mapping[str, dict], *, unpaired: str = "shuffle",
                 crop_samples: int = DEFAULT_CROP_SAMPLES, seed: int = DEFAULT_SEED, sample_rate: int = 16000,
                 name: str = "training manifest"):
        if unpaired not in UNPAIRED_MODES:
            raise ConfigError(f"unpaired must be one of {', '.join(UNPAIRED_MODES)}, got {unpaired!r}")
        if int(crop_samples) != crop_samples or crop_samples <= 0:
            raise ConfigError(f"crop_samples must be a positive integer, got {crop_samples!r}")
        noisy = {uid: e for uid, e in entries.items() if "noisy_wav" in e}
        clean = {uid: e for uid, e in entries.items() if "clean_wav" in e}
        if unpaired == "paired":
            noisy = {uid: e for uid, e in noisy.items() if "clean_wav" in e}
            if not noisy:
                raise DataError(f"{name}: unpaired='paired' needs entries with both noisy_wav and clean_wav "
                                "(data prepared with paired=True)")
            clean = noisy
        elif unpaired == "disjoint":
            noisy, clean = _split_speakers(noisy, clean, seed, name)
        if not noisy:
            raise DataError(f"{name}: no noisy training files")
        if not clean:
            raise DataError(f"{name}: no clean training files")

        self.mode = unpaired
        self.crop_samples = int(crop_samples)
        self.seed = int(seed) % 2 ** 64  # SeedSequence wants a non-negative entropy
        self.sample_rate = int(sample_rate)
        self.epoch: Optional[int] = None
        self.noisy_speakers = sorted({str(e.get("spk", "")) for e in noisy.values()})
        self.clean_speakers = sorted({str(e.get("spk", "")) for e in clean.values()})
        self.longest = {side: _longest(group) for side, group in (("noisy", noisy), ("clean", clean))}
        self._clean_ids: List[str] = list(clean)
        self._clean_paths: List[str] = [clean[c]["clean_wav"] for c in self._clean_ids]
        # Position of each noisy item's own recording in the clean pool, excluded from "shuffle" draws.
        base_pos = {_base_id(c): j for j, c in enumerate(self._clean_ids)}
        self._own_pos = {uid: base_pos.get(_base_id(uid)) for uid in noisy}
        self._index = {uid: i for i, uid in enumerate(noisy)}
        self._draws: Counter = Counter()
        super().__init__({uid: {"noisy_wav": e["noisy_wav"]} for uid, e in noisy.items()})
        self.add_dynamic_item(self._crops, takes=["id", "noisy_wav"], provides=["noisy_sig", "clean_sig", "clean_id"])
        self.set_output_keys(["id", "noisy_sig", "clean_sig", "clean_id"])

    def set_epoch(self, epoch: int) -> None:
        """Makes the draws a function of ``(seed, epoch, item)`` (call at each epoch start)."""
        self.epoch = int(epoch)
        self._draws.clear()

    def _generators(self, uid: str) -> List[np.random.Generator]:
        """Three independent streams for one draw: clean-partner choice, noisy offset, clean offset."""
        count = self._draws[uid]
        self._draws[uid] += 1
        entropy = [self.seed, 0 if self.epoch is None else self.epoch + 1, self._index[uid], count]
        if self.epoch is None:
            entropy.append(_worker_base_seed())
        return [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(3)]

    def _crops(self, uid: str, noisy_wav: str) -> Iterator[Union[torch.Tensor, str]]:
        pick, noisy_rng, clean_rng = self._generators(uid)
        noisy = load_mono(noisy_wav, self.sample_rate)
        if self.mode == "paired":
            clean = load_mono(self._clean_paths[self._own_pos[uid]], self.sample_rate)
            n = min(noisy.shape[-1], clean.shape[-1])
            start = _offset(noisy_rng, n, self.crop_samples)
            yield _crop(noisy[:n], start, self.crop_samples)
            yield _crop(clean[:n], start, self.crop_samples)
            yield uid
            return
        j = _pick_other(pick, len(self._clean_ids), self._own_pos[uid])
        clean = load_mono(self._clean_paths[j], self.sample_rate)
        yield _crop(noisy, _offset(noisy_rng, noisy.shape[-1], self.crop_samples), self.crop_samples)
        yield _crop(clean, _offset(clean_rng, clean.shape[-1], self.crop_samples), self.crop_samples)
        yield self._clean_ids[j]


def make_train_dataset(manifest_path: PathLike, data_root: Optional[PathLike] = None, *,
                       unpaired: str = "shuffle", crop_samples: int = DEFAULT_CROP_SAMPLES,
                       seed: int = DEFAULT_SEED, sample_rate: int = 16000,
                       save_folder: Optional[PathLike] = None) -> CycleTrainDataset:
    """The training dataset of random crops (see :class:`CycleTrainDataset` and the module docstring).

    ``manifest_path`` is a ``train.json`` (paired, or unpaired with one-sided entries); ``data_root`` and
    ``save_folder`` fill its placeholders (see :func:`load_manifest`).
    """
    entries = load_manifest(manifest_path, data_root, save_folder)
    return CycleTrainDataset(entries, unpaired=unpaired, crop_samples=crop_samples, seed=seed,
                             sample_rate=sample_rate, name=str(manifest_path))


def make_eval_dataset(manifest_path: PathLike, data_root: Optional[PathLike] = None, *,
                      sample_rate: int = 16000, save_folder: Optional[PathLike] = None) -> DynamicItemDataset:
    """Whole-file evaluation dataset: items ``{"id", "noisy_sig": [T], "clean_sig": [T]}``.

    Noisy and clean are trimmed to the shorter of the two. A manifest whose entries have no
    ``clean_wav`` gives ``{"id", "noisy_sig"}`` items; ``dataset.has_reference`` tells which.
    """
    entries = load_manifest(manifest_path, data_root, save_folder)
    with_ref = ["clean_wav" in e for e in entries.values()]
    no_noisy = [uid for uid, e in entries.items() if "noisy_wav" not in e]
    if no_noisy:
        raise DataError(f"{manifest_path}: evaluation entries need noisy_wav; {no_noisy[0]!r} has none")
    if any(with_ref) and not all(with_ref):
        raise DataError(f"{manifest_path}: some entries have clean_wav and some do not; an evaluation "
                        "manifest is either paired or noisy-only")
    has_reference = all(with_ref)
    dataset = DynamicItemDataset({uid: {k: e[k] for k in ("noisy_wav", "clean_wav") if k in e}
                                  for uid, e in entries.items()})
    if has_reference:
        dataset.add_dynamic_item(functools.partial(_load_pair, sample_rate=sample_rate),
                                 takes=["noisy_wav", "clean_wav"], provides=["noisy_sig", "clean_sig"])
        dataset.set_output_keys(["id", "noisy_sig", "clean_sig"])
    else:
        dataset.add_dynamic_item(functools.partial(load_mono, sample_rate=sample_rate),
                                 takes="noisy_wav", provides="noisy_sig")
        dataset.set_output_keys(["id", "noisy_sig"])
    dataset.has_reference = has_reference
    return dataset


def dataio_prep(hparams: Mapping) -> Dict[str, Optional[DynamicItemDataset]]:
    """Builds the recipe's datasets from its hyperparameters.

    Keys read (all optional except where a default cannot be formed):

    - ``prep_folder`` (or else ``save_folder``): where the manifests and the resampling cache are; fills
      ``{save_folder}`` and gives the default manifest paths ``<prep_folder>/{train,valid,test}.json``;
    - ``train_annotation``, ``valid_annotation``, ``test_annotation``: manifest paths;
    - ``data_folder``: the corpus folder, fills ``{data_root}`` (default: the one recorded at preparation);
    - ``unpaired``: ``shuffle`` (default) | ``disjoint`` | ``paired``;
    - ``crop_samples`` (default 32000), or ``training_length`` in seconds (``crop_samples`` wins);
    - ``seed`` (default 1234), ``sample_rate`` (default 16000).

    Returns
    -------
    ``{"train": CycleTrainDataset, "valid": eval dataset, "test": eval dataset or None}``; ``test`` is
    None when ``test_annotation`` is not set and ``<save_folder>/test.json`` does not exist.
    """
    save_folder = hparams.get("prep_folder", hparams.get("save_folder"))
    sample_rate = int(hparams.get("sample_rate", 16000))
    crop = hparams.get("crop_samples")
    if crop is None:
        length_s = hparams.get("training_length")
        crop = DEFAULT_CROP_SAMPLES if length_s is None else int(round(float(length_s) * sample_rate))

    def annotation(name: str) -> Optional[Path]:
        given = hparams.get(f"{name}_annotation")
        if given is not None:
            return Path(given)
        if save_folder is None:
            raise ConfigError(f"set {name}_annotation or save_folder in the hyperparameters")
        return Path(save_folder) / f"{name}.json"

    common = dict(data_root=hparams.get("data_folder"), sample_rate=sample_rate, save_folder=save_folder)
    train = make_train_dataset(annotation("train"), unpaired=str(hparams.get("unpaired", "shuffle")),
                               crop_samples=crop, seed=int(hparams.get("seed", DEFAULT_SEED)), **common)
    check_crop_fits(train, annotation("train"))
    valid = make_eval_dataset(annotation("valid"), **common)
    test_path = annotation("test")
    test_optional = hparams.get("test_annotation") is None
    test = None if (test_optional and not test_path.is_file()) else make_eval_dataset(test_path, **common)
    return {"train": train, "valid": valid, "test": test}


def check_crop_fits(train: CycleTrainDataset, name: PathLike = "training manifest") -> None:
    """Raises ConfigError when the crop is longer than every file of a side of the training set.

    Shorter files are zero-padded to the crop, which is fine for a few of them; a crop longer than the
    longest file means every crop is partly padding: almost always a wrong ``crop_samples`` or
    ``training_length`` (or ``sample_rate``), better stopped before the first epoch than after the last.
    """
    for side, longest in train.longest.items():
        if longest is None:
            continue
        uid, seconds = longest
        samples = int(round(seconds * train.sample_rate))
        if train.crop_samples > samples:
            raise ConfigError(
                f"crop_samples={train.crop_samples} ({train.crop_samples / train.sample_rate:g} s) is longer than "
                f"every {side} training file in {name}: the longest, {uid}, has {samples} samples "
                f"({seconds:.2f} s); lower crop_samples (or training_length)")


# ---------------------------------------------------------------------------------------------- internals

def _load_pair(noisy_wav: str, clean_wav: str, sample_rate: int) -> Iterator[torch.Tensor]:
    noisy = load_mono(noisy_wav, sample_rate)
    clean = load_mono(clean_wav, sample_rate)
    n = min(noisy.shape[-1], clean.shape[-1])
    yield noisy[:n]
    yield clean[:n]


def _offset(rng: np.random.Generator, length: int, crop: int) -> int:
    """Uniform crop start in ``[0, length - crop]`` (0 when the signal is not longer than the crop)."""
    return int(rng.integers(0, max(length - crop, 0) + 1))


def _crop(sig: torch.Tensor, start: int, crop: int) -> torch.Tensor:
    """``sig[start:start+crop]``, zero-padded at the end to exactly ``crop`` samples."""
    seg = sig[start:start + crop]
    if seg.shape[-1] < crop:
        seg = torch.nn.functional.pad(seg, (0, crop - seg.shape[-1]))
    return seg.contiguous()


def _longest(entries: Mapping[str, dict]) -> Optional[Tuple[str, float]]:
    """(id, seconds) of the longest entry by its ``length``; None if any entry lacks a usable one."""
    try:
        lengths = {uid: float(e["length"]) for uid, e in entries.items()}
    except (KeyError, TypeError, ValueError):
        return None
    uid = max(lengths, key=lengths.get)
    return uid, lengths[uid]


def _pick_other(rng: np.random.Generator, n: int, own: Optional[int]) -> int:
    """Uniform index in ``range(n)``, never ``own`` (the matched recording) unless it is the only one."""
    if own is None or n == 1:
        return int(rng.integers(n))
    j = int(rng.integers(n - 1))
    return j + (j >= own)


def _split_speakers(noisy: Dict[str, dict], clean: Dict[str, dict], seed: int,
                    name: str) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    """Keeps noisy and clean entries of disjoint speaker sets (shared speakers split in halves by seed)."""
    missing = [uid for uid, e in {**noisy, **clean}.items() if not e.get("spk")]
    if missing:
        raise DataError(f"{name}: unpaired='disjoint' needs a speaker (spk) in every entry; {missing[0]!r} has none")
    noisy_spks = {e["spk"] for e in noisy.values()}
    clean_spks = {e["spk"] for e in clean.values()}
    shared = sorted(noisy_spks & clean_spks)
    perm = np.random.default_rng(int(seed) % 2 ** 64).permutation(len(shared))
    to_clean = {shared[i] for i in perm[:len(shared) // 2]}
    keep_noisy = (noisy_spks - clean_spks) | (set(shared) - to_clean)
    keep_clean = (clean_spks - noisy_spks) | to_clean
    if not keep_noisy or not keep_clean:
        raise DataError(f"{name}: unpaired='disjoint' needs at least 2 training speakers to split into a noisy "
                        f"and a clean half; found {', '.join(sorted(noisy_spks | clean_spks))}")
    return ({u: e for u, e in noisy.items() if e["spk"] in keep_noisy},
            {u: e for u, e in clean.items() if e["spk"] in keep_clean})


def _base_id(uid: str) -> str:
    for prefix in _SIDE_PREFIXES:
        if uid.startswith(prefix):
            return uid[len(prefix):]
    return uid


def _worker_base_seed() -> int:
    """The DataLoader's per-iterator base seed inside a worker (same for all workers), else 0."""
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else (int(info.seed) - int(info.id)) % 2 ** 64


def _recorded_data_root(folder: Path) -> Optional[str]:
    try:
        with open(folder / OPTIONS_FILE, encoding="utf-8") as f:
            return json.load(f)["options"]["data_root"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
