"""Adapt a model to a user's own noise from their noisy recordings alone (``upcycle-se adapt``).

A user has noisy recordings of their own conditions (a call centre, a factory floor, field interviews) and
no clean version of any of them. :func:`adapt` fine-tunes a model on them, unpaired, for a wall-clock
budget, and exports the result as a model folder for ``upcycle-se enhance``:

1. The recordings are checked and cut into segments of at most :data:`SEGMENT_SECONDS` (16 kHz mono, in the
   work folder). Unreadable, empty and silent files are skipped and named; a stereo file stops it, as in
   the recipe. Too little usable audio (under :data:`MIN_SECONDS`) is a one-line error.
2. The clean pile is ``clean_folder``, or clean speech synthesized offline by the corpus builder
   (:func:`upcycle_se.corpus.build.build_corpus`: flite, espeak-ng and, when installed, Piper voices).
3. Training is the ``recipes/UnpairedFolders`` recipe: the same data preparation
   (:mod:`upcycle_se.data.folders`), the same :class:`~upcycle_se.brain.UpCycleBrain`, with the settings the
   packaged ``unpaired`` model was trained with (``upcycle_se/hparams/adapt.yaml``) and a wall-clock
   budget (:class:`~upcycle_se.budget.WallClockEpochCounter`). A tenth of the segments (at most
   :data:`MAX_VALID_SEGMENTS`) is held out; the checkpoint with the best reference-free ``snr_gain`` on them
   is exported (:mod:`upcycle_se.validation`).
4. Killed, the same call continues from the last checkpoint with the budget that was left.

Example::

    from upcycle_se.adapt import adapt
    result = adapt("recordings/", "my_model", minutes=30)
    print(result.enhance_command)
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from upcycle_se.data.prepare import _read_json, _write_json_atomic  # the recipe's own atomic JSON helpers
from upcycle_se.errors import AudioError, DataError, UserError

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

#: The least usable noisy audio adapt trains on, in seconds.
MIN_SECONDS = 60.0
#: Recordings are cut into segments of at most this many seconds (each a training and validation item).
SEGMENT_SECONDS = 6.0
#: Shorter leftovers are dropped (a training crop is 1 s).
MIN_SEGMENT_SECONDS = 1.0
#: A file or segment whose RMS level is below this (dBFS) is silent and skipped.
SILENCE_DBFS = -60.0
#: At most this many segments are held out for the reference-free checkpoint choice.
MAX_VALID_SEGMENTS = 24
#: The default budget (minutes of wall-clock time): a laptop's coffee break.
DEFAULT_MINUTES = 30.0
#: Minutes of clean speech synthesized when no clean folder is given.
DEFAULT_CLEAN_MINUTES = 10.0
#: The model adapt starts from by default.
DEFAULT_FROM = "unpaired"
OPTIONS_FILE = "adapt_options.json"
SEGMENTS_MARKER = "segments.json"
START_SCORE_FILE = "start_snr_gain.json"


@dataclass
class AdaptResult:
    """What :func:`adapt` made: the model folder and how it was chosen."""

    model_dir: Path
    checkpoint: Path  # the exported checkpoint (CKPT+* folder in the work folder)
    epoch: int  # its epoch
    snr_gain: float  # its reference-free criterion on the held-out segments, dB
    start_snr_gain: float  # the starting model's, on the same segments
    epochs: int  # epochs trained
    minutes_spent: float  # of the budget
    noisy_seconds: float  # usable noisy audio
    n_train_segments: int
    n_valid_segments: int
    skipped: List[str]  # noisy files not used, each with why
    enhance_command: str  # what to run next


def adapt(noisy_folder: PathLike, out: PathLike, *, from_model: str = DEFAULT_FROM,
          clean_folder: Optional[PathLike] = None, clean_minutes: float = DEFAULT_CLEAN_MINUTES,
          minutes: float = DEFAULT_MINUTES, work_folder: Optional[PathLike] = None, overwrite: bool = False,
          seed: int = 1234, precision: str = "auto", threads: Optional[int] = None, progress: bool = True,
          min_seconds: float = MIN_SECONDS) -> AdaptResult:
    """Fine-tunes ``from_model`` on the recordings in ``noisy_folder`` and exports it to ``out``.

    Arguments
    ---------
    noisy_folder : the user's noisy recordings (searched recursively; any rate and format soundfile reads).
    out : the model folder to write (it must not exist unless ``overwrite``).
    from_model : a packaged model (``unpaired``, ``default``, ``small``) or a model folder made by
        ``upcycle-se export`` or ``import-reference``.
    clean_folder : clean speech from elsewhere; None: ``clean_minutes`` of it are synthesized offline.
    minutes : the wall-clock training budget (validation and checkpoints included). Called again after a
        kill, or with more minutes after it ended, training continues up to this total.
    work_folder : checkpoints, segments, logs and TensorBoard; default ``<out>.work``.
    overwrite : replace ``out`` if it exists.
    seed : of the data draws and the synthesized speech.
    precision : ``auto`` (bf16 where the CPU or GPU has it), ``fp32`` or ``bf16``.
    threads : CPU threads for torch (default: torch's).
    progress : a tqdm bar with the step, the elapsed and remaining budget and the criterion.
    min_seconds : the least usable noisy audio (seconds).

    Raises
    ------
    UserError : one line naming the problem (bad folder or options, too little audio, ...).
    """
    import speechbrain as sb
    from speechbrain.dataio.sampler import ReproducibleRandomSampler
    from speechbrain.utils.distributed import run_on_main

    from upcycle_se.data.folders import dataio_prep, prepare_kwargs
    from upcycle_se.data.prepare import prepare_folders
    from upcycle_se.export import export_model
    from upcycle_se.recipe import check_batches, init_generator, load_hparams, validate_hparams

    minutes, clean_minutes = _positive("minutes", minutes), _positive("clean_minutes", clean_minutes)
    noisy_folder, out = Path(noisy_folder).expanduser().resolve(), Path(out).expanduser().resolve()
    if not noisy_folder.is_dir():
        raise DataError(f"{noisy_folder}: no such folder (give the folder of your noisy recordings)")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    work = Path(work_folder).expanduser().resolve() if work_folder is not None else out.with_name(out.name + ".work")
    if _is_within(work, noisy_folder) or _is_within(out, noisy_folder):
        raise UserError(f"{noisy_folder}: --out and --work must be outside the folder of recordings")
    start, preset, paper_discs = resolve_start_model(from_model)
    if threads is not None:
        torch.set_num_threads(int(threads))
    options = {"noisy_folder": str(noisy_folder), "from": str(start), "seed": int(seed),
               "clean_folder": None if clean_folder is None else str(Path(clean_folder).expanduser().resolve()),
               "clean_minutes": None if clean_folder is not None else clean_minutes}
    _claim_work_folder(work, options)

    # 1. the user's recordings, as segments
    seg = cut_segments(noisy_folder, work / "noisy_segments", min_seconds=min_seconds, progress=progress)
    for line in seg["skipped"]:
        logger.warning("skipped %s", line)
    # 2. the clean pile
    clean = Path(options["clean_folder"]) if clean_folder is not None else build_clean_pile(
        work / "clean_speech", clean_minutes, seed)
    # 3. the recipe
    n_segments = len(seg["segments"])
    valid_fraction = min(0.1, MAX_VALID_SEGMENTS / n_segments)
    overrides = {"noisy_folder": str(work / "noisy_segments"), "clean_folder": str(clean),
                 "output_folder": str(work / "run"), "generator_preset": preset,
                 "minutes": float(minutes), "seed": int(seed), "valid_fraction": valid_fraction}
    if paper_discs:
        overrides["discriminator_preset"] = "paper"
    hparams_file = str(adapt_hparams_file())
    hparams = load_hparams(hparams_file, overrides)
    run_opts = {"device": "cuda" if torch.cuda.is_available() else "cpu", "noprogressbar": True,
                "precision": _training_precision(precision)}
    validate_hparams(hparams, run_opts)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    restore_console = _quiet_console()
    try:
        run_on_main(prepare_folders, kwargs=prepare_kwargs(hparams))
        datasets = dataio_prep(hparams)
        check_batches(len(datasets["train"]), hparams["train_dataloader_opts"])
        init_generator(hparams["pretrainer"], str(start), preset, modules=hparams["modules"])
        start_gain = _start_snr_gain(work, hparams["modules"]["gen_n2c"], datasets["valid"], hparams["sample_rate"])

        from upcycle_se.brain import UpCycleBrain

        class AdaptBrain(UpCycleBrain):
            """The recipe's Brain with a progress bar over the budget and a per-epoch sampler."""

            def on_stage_start(self, stage, epoch=None):
                super().on_stage_start(stage, epoch)
                if stage == sb.Stage.TRAIN:
                    sampler.set_epoch(epoch)

            @property
            def _optimizer_step_limit_exceeded(self):
                # SpeechBrain's step limit, made a time limit: the epoch stops when the budget is spent (after
                # at least one step), then it is validated and checkpointed as any other.
                return self.step > 0 and counter.remaining_s() <= 0

            def fit_batch(self, batch):
                loss = super().fit_batch(batch)
                bar.step(float(loss))
                return loss

            def on_stage_end(self, stage, stage_loss, epoch=None):
                super().on_stage_end(stage, stage_loss, epoch)
                if stage == sb.Stage.VALID and hasattr(self, "metrics"):
                    bar.criterion(self.metrics.summarize("average"))

        batch_size = hparams["batch_size"]
        sampler = ReproducibleRandomSampler(datasets["train"], seed=int(seed), replacement=True,
                                            num_samples=int(hparams["steps_per_epoch"]) * batch_size)
        loader_opts = dict(hparams["train_dataloader_opts"], sampler=sampler)
        counter = hparams["epoch_counter"]
        brain = AdaptBrain(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                           checkpointer=hparams["checkpointer"])
        bar = _BudgetBar(counter, start_gain, enabled=progress)
        try:
            brain.fit(epoch_counter=counter, train_set=datasets["train"], valid_set=datasets["valid"],
                      train_loader_kwargs=loader_opts, valid_loader_kwargs=hparams["valid_dataloader_opts"])
        finally:
            bar.close()
    finally:
        restore_console()

    # 4. export the checkpoint chosen without a reference
    info = export_model(hparams["output_folder"], out, ckpt_key="snr_gain", overwrite=overwrite)
    meta = info.checkpoint.meta
    command = f"upcycle-se enhance --model {shlex.quote(str(out))} -o enhanced/ {shlex.quote(str(noisy_folder))}"
    result = AdaptResult(
        model_dir=out, checkpoint=info.checkpoint.path, epoch=int(meta.get("epoch", 0)),
        snr_gain=float(meta["snr_gain"]), start_snr_gain=start_gain, epochs=int(counter.current),
        minutes_spent=counter.spent_s / 60.0, noisy_seconds=seg["seconds"],
        n_train_segments=len(datasets["train"]), n_valid_segments=len(datasets["valid"]),
        skipped=seg["skipped"], enhance_command=command)
    _write_json_atomic(out / "adapt.json", {k: str(v) if isinstance(v, Path) else v
                                            for k, v in asdict(result).items()} | {"options": options})
    return result


# ------------------------------------------------------------------------------------------ pieces
def adapt_hparams_file() -> Path:
    """The packaged hyperparameters of ``adapt`` (``upcycle_se/hparams/adapt.yaml``)."""
    return Path(__file__).resolve().parent / "hparams" / "adapt.yaml"


def resolve_start_model(from_model: str) -> Tuple[Path, str, bool]:
    """The starting model's folder, its generator preset, and whether it holds the authors' discriminators
    (a folder made by ``import-reference``).

    Raises
    ------
    UserError : not a model folder or packaged name; a generator that is no preset (adapt fine-tunes presets).
    """
    from hyperpyyaml import load_hyperpyyaml

    from upcycle_se.inference import PACKAGED_MODELS, packaged_model_dir
    from upcycle_se.models import GENERATOR_PRESETS, PAPER_PRESETS, build_generator

    folder = Path(from_model).expanduser()
    if not folder.is_dir() and from_model in PACKAGED_MODELS:
        folder = packaged_model_dir(from_model)
    folder = folder.resolve()
    if not (folder / "generator.ckpt").is_file() or not (folder / "hyperparams.yaml").is_file():
        raise UserError(f"--from {from_model}: not a model folder (no generator.ckpt and hyperparams.yaml there); "
                        f"give a packaged model ({', '.join(PACKAGED_MODELS)}) or a folder made by "
                        "`upcycle-se export` or `upcycle-se import-reference`")
    try:
        with open(folder / "hyperparams.yaml", encoding="utf-8") as fin:
            generator = load_hyperpyyaml(fin)["generator"]
    except Exception as err:  # noqa: BLE001 - a broken folder, whatever HyperPyYAML raises
        raise UserError(f"--from {from_model}: {folder}/hyperparams.yaml does not load ({first_line(err)})") from None
    config = dict(generator.config)
    mask_type = config.get("mask_type", "complex")
    if config.get("mode", "mask") != "mask":
        raise UserError(f"--from {from_model}: its generator is not an enhancer (mode {config.get('mode')!r})")
    for preset in list(PAPER_PRESETS) + list(GENERATOR_PRESETS):
        candidate = build_generator(preset, mode="mask", mask_type=mask_type if preset not in PAPER_PRESETS
                                    else "complex")
        if type(candidate) is type(generator) and candidate.config == config:
            if mask_type != "complex":
                raise UserError(f"--from {from_model}: adapt fine-tunes models with the paper's complex mask, "
                                f"not mask_type={mask_type!r}")
            return folder, preset, (folder / "disc_clean.ckpt").is_file() and preset in PAPER_PRESETS
    raise UserError(f"--from {from_model}: its generator is not one of the presets adapt can fine-tune "
                    f"({', '.join(list(PAPER_PRESETS) + list(GENERATOR_PRESETS))})")


def cut_segments(noisy_folder: Path, seg_dir: Path, *, min_seconds: float = MIN_SECONDS,
                 progress: bool = True) -> Dict:
    """Cuts the usable recordings of ``noisy_folder`` into 16 kHz mono segments under ``seg_dir``.

    Segments are at most :data:`SEGMENT_SECONDS` long (shorter leftovers than :data:`MIN_SEGMENT_SECONDS`
    and silent ones are dropped); each is written atomically as ``<relative path>__<k>.wav``. A rerun on
    the same files (same paths, sizes and modification times) reuses them.

    Returns
    -------
    ``{"segments": [paths], "seconds": usable seconds, "skipped": ["<file>: why", ...]}``

    Raises
    ------
    DataError : no audio files; a stereo file (as the recipe); no usable file; less than ``min_seconds``.
    """
    from tqdm import tqdm

    from upcycle_se.audio import AUDIO_EXTENSIONS, read_audio, resample_audio, write_audio_atomic
    from upcycle_se.data.prepare import _probe

    files = sorted(p for p in noisy_folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(noisy_folder).parts))
    if not files:
        raise DataError(f"{noisy_folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder of "
                        "noisy recordings")
    fingerprint = hashlib.sha1(json.dumps(
        [[str(p.relative_to(noisy_folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    ).encode()).hexdigest()
    marker = _read_json(seg_dir / SEGMENTS_MARKER)
    if marker.get("fingerprint") == fingerprint and all((seg_dir / s).is_file() for s in marker["segments"]):
        result = dict(marker, segments=[seg_dir / s for s in marker["segments"]])
        _check_enough(noisy_folder, result, len(files), min_seconds)
        return result
    if seg_dir.exists():  # other recordings than last time: cut again
        for old in seg_dir.rglob("*.wav"):
            old.unlink()
    rate = 16000
    seg_len, min_len = int(SEGMENT_SECONDS * rate), int(MIN_SEGMENT_SECONDS * rate)
    segments: List[str] = []
    skipped: List[str] = []
    seconds = 0.0
    for path in tqdm(files, desc="Cutting recordings into segments", unit="file", disable=not progress):
        rel = path.relative_to(noisy_folder)
        try:
            info = _probe(path)
            if info.channels != 1:  # pragma: no cover - _probe raises for it
                raise AudioError(f"{path}: has {info.channels} channels")
            sig, sr = read_audio(path)
        except AudioError as err:
            if "channels" in str(err):
                raise DataError(f"{err} (as the recipe: mix your recordings down to mono first, e.g. "
                                "`sox in.wav out.wav remix -`)") from None
            skipped.append(f"{rel}: {err}".replace(f"{path}: ", ""))
            continue
        sig = resample_audio(sig.reshape(-1), sr, rate) if sr != rate else sig.reshape(-1)
        if _dbfs(sig) < SILENCE_DBFS:
            skipped.append(f"{rel}: silent (RMS below {SILENCE_DBFS:g} dBFS)")
            continue
        pieces = max(1, math.ceil(len(sig) / seg_len))
        bounds = [round(i * len(sig) / pieces) for i in range(pieces + 1)]
        for k in range(pieces):
            piece = sig[bounds[k]:bounds[k + 1]]
            if len(piece) < min_len or _dbfs(piece) < SILENCE_DBFS:
                continue
            name = f"{rel.with_suffix('').as_posix().replace('/', '__')}__{k:04d}.wav"
            write_audio_atomic(seg_dir / name, piece, rate, subtype="FLOAT")
            segments.append(name)
            seconds += len(piece) / rate
    marker = {"fingerprint": fingerprint, "segments": segments, "seconds": seconds, "skipped": skipped}
    _write_json_atomic(seg_dir / SEGMENTS_MARKER, marker)
    result = dict(marker, segments=[seg_dir / s for s in segments])
    _check_enough(noisy_folder, result, len(files), min_seconds)
    return result


def build_clean_pile(folder: Path, minutes: float, seed: int) -> Path:
    """About ``minutes`` of clean speech synthesized offline by the corpus builder (12 speakers; half of them
    Piper pseudo-speakers when the ``voices`` extra is installed); returns its clean folder. Reused when
    already built with the same arguments."""
    from upcycle_se.corpus.build import build_corpus, corpus_folders
    from upcycle_se.corpus.speech import require_piper

    try:
        require_piper()
        piper = True
    except UserError:
        piper = False
    n_speakers = 12
    utts = max(1, math.ceil(minutes * 60.0 / 3.8 / n_speakers))  # the builder's utterances average ~3.8 s
    logger.info("Synthesizing about %.0f min of clean speech into %s", minutes, folder)
    build_corpus(folder, n_train_speakers=n_speakers, n_test_speakers=1, utts_per_speaker=utts,
                 test_utts_per_speaker=1, seed=seed, train_noises=("white",), test_noises=("pink",),
                 piper_speakers=n_speakers // 2 if piper else 0)
    return folder / corpus_folders()["clean_train"]


# ------------------------------------------------------------------------------------------ helpers
class _BudgetBar:
    """A tqdm bar over the budget in seconds: step, elapsed, remaining, and the last ``snr_gain``."""

    def __init__(self, counter, start_gain: float, enabled: bool = True):
        from tqdm import tqdm

        self.counter, self.steps, self.loss = counter, 0, float("nan")
        self.gain = f"{start_gain:+.2f} dB (start)"
        self.bar = tqdm(total=round(counter.budget_s), unit="s", desc="adapt", disable=not enabled,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                   "[{elapsed}<{remaining}{postfix}]")
        self._refresh()

    def step(self, loss: float) -> None:
        self.steps, self.loss = self.steps + 1, loss
        self._refresh()

    def criterion(self, gain: float) -> None:
        self.gain = f"{gain:+.2f} dB"
        self._refresh()

    def _refresh(self) -> None:
        self.bar.n = min(self.bar.total, round(self.counter.elapsed_s()))
        self.bar.set_postfix_str(f"epoch {self.counter.current}, step {self.steps}, loss {self.loss:.3f}, "
                                 f"snr_gain {self.gain}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _start_snr_gain(work: Path, generator: torch.nn.Module, valid_set, sample_rate: int) -> float:
    """The starting model's mean ``snr_gain`` on the held-out segments (computed once per work folder)."""
    from upcycle_se.validation import snr_gain

    saved = _read_json(work / START_SCORE_FILE)
    if "snr_gain" in saved:
        return float(saved["snr_gain"])
    gains = []
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        for item in valid_set:
            noisy = item["noisy_sig"].reshape(1, -1)  # [1, time]
            enhanced = generator(noisy)[..., : noisy.shape[-1]]
            gains.append(float(snr_gain(enhanced, noisy, torch.ones(1), sample_rate=sample_rate)[0]))
    generator.train(was_training)
    gain = float(sum(gains) / max(len(gains), 1))
    _write_json_atomic(work / START_SCORE_FILE, {"snr_gain": gain, "n_files": len(gains)})
    return gain


def _claim_work_folder(work: Path, options: dict) -> None:
    """Records the options in a new work folder; in an existing one they must be the same (minutes may
    differ: more minutes continue the training)."""
    recorded = _read_json(work / OPTIONS_FILE)
    if recorded and recorded != options:
        changed = sorted(k for k in set(recorded) | set(options) if recorded.get(k) != options.get(k))
        raise UserError(f"{work}: holds an adaptation with other options ({', '.join(changed)}); delete it or "
                        "give another --work")
    work.mkdir(parents=True, exist_ok=True)
    if not recorded:
        _write_json_atomic(work / OPTIONS_FILE, options)


def _check_enough(folder: Path, seg: Dict, n_files: int, min_seconds: float) -> None:
    if not seg["segments"]:
        why = "; ".join(seg["skipped"][:3]) + (" ..." if len(seg["skipped"]) > 3 else "")
        raise DataError(f"{folder}: none of its {n_files} audio file(s) is usable ({why})")
    if seg["seconds"] < min_seconds:
        raise DataError(f"{folder}: only {seg['seconds']:.1f} s of usable audio; adapt needs at least "
                        f"{min_seconds:g} s of your noisy recordings (minutes to hours are better)")


def _training_precision(precision: str) -> str:
    from upcycle_se.models.runtime import resolve_precision

    dtype = resolve_precision(precision, "cuda" if torch.cuda.is_available() else "cpu")
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _quiet_console() -> Callable[[], None]:
    """SpeechBrain logs every epoch to the console; the progress bar says it better. The log file keeps all.

    Returns the function that gives the console handlers their levels back, so that a Python caller's
    logging is as it was once :func:`adapt` returns or fails.
    """
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.WARNING)

    def restore() -> None:
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)

    return restore


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"--{name.replace('_', '-')} {value!r}: must be a positive number of minutes")
    return float(value)


def _dbfs(sig: torch.Tensor) -> float:
    rms = float(sig.double().pow(2).mean().sqrt()) if sig.numel() else 0.0
    return 20.0 * math.log10(max(rms, 1e-12))


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


__all__ = ["adapt", "AdaptResult", "cut_segments", "build_clean_pile", "resolve_start_model",
           "adapt_hparams_file", "MIN_SECONDS", "DEFAULT_MINUTES", "DEFAULT_CLEAN_MINUTES", "DEFAULT_FROM"]

