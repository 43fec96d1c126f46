"""Exporting a trained Up-Cycle-SENet generator from a recipe run as a model folder (``upcycle-se export``).

A *model folder* holds ``hyperparams.yaml`` (rendered from the packaged template
``upcycle_se/hparams/inference.yaml``) and ``generator.ckpt`` (the noisy->clean generator's state_dict),
and optionally ``generator.onnx``; :func:`import_reference` writes one from the authors' released checkpoint.
It loads with :class:`upcycle_se.inference.UpCycleEnhancement` and with
SpeechBrain's stock :class:`~speechbrain.inference.enhancement.WaveformEnhancement`.

Python::

    from upcycle_se.export import export_model

    info = export_model("results/upcycle/1986", "models/upcycle-small", onnx=True)  # best CKPT by PESQ

Command line::

    upcycle-se export --checkpoint results/upcycle/1986 --out models/upcycle-small --onnx
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpoint

from upcycle_se.checkpoints import read_checkpoints
from upcycle_se.errors import ConfigError, UserError, first_line
from upcycle_se.inference import (
    GENERATOR_FILE,
    HPARAMS_FILE,
    PathLike,
    UpCycleEnhancement,
    unwrap_state_dict,
)
from upcycle_se.models import GENERATOR_CLASSES, PaperGenerator, export_onnx
from upcycle_se.models.attenuation import check_max_attenuation_db
from upcycle_se.reference_import import (
    discriminator_state_from_reference,
    generator_state_from_reference,
    load_reference_checkpoint,
)

#: The recipe's checkpoint file of the noisy->clean generator, and the JSON that rebuilds it.
RECIPE_GENERATOR = "gen_n2c"
#: Its weight average (recipe option ``ema_decay > 0``); exported instead of the raw weights when present,
#: since validation chose the checkpoint by the average's scores.
RECIPE_GENERATOR_EMA = "gen_n2c_ema"
RECIPE_MODEL_CONFIG = "model_config.json"

#: The optional ONNX copy of the generator in a model folder (``upcycle-se export --onnx``).
ONNX_FILE = "generator.onnx"
#: Largest onnxruntime-vs-PyTorch difference accepted, relative to the PyTorch output's peak (measured
#: on the small generator: about 1e-7 for a 0.3 peak, i.e. 3e-7 relative).
ONNX_TOLERANCE = 1e-4

# The line of the template under which export writes the generator's constructor arguments; export names
# the run's generator class on it.
_GENERATOR_LINE = "generator: !new:upcycle_se.models.UpCycleGenerator"
#: ``model_config.json``'s key for the generator's class (absent in runs of the redesign only).
RECIPE_GENERATOR_CLASS = "gen_n2c_class"


#: The validation keys the recipes choose checkpoints by, in order: PESQ with a paired validation set,
#: the reference-free ``snr_gain`` without one (recipes/UnpairedFolders).
SELECTION_KEYS = ("pesq", "snr_gain")


def chosen_key(meta: dict, ckpt_key: Optional[str] = None) -> str:
    """The key a checkpoint with ``meta`` was chosen by: ``ckpt_key``, or else the first of
    :data:`SELECTION_KEYS` it records (what :func:`find_best_checkpoint` maximised)."""
    return ckpt_key or next((k for k in SELECTION_KEYS if _finite_number(meta.get(k))), SELECTION_KEYS[0])


def find_best_checkpoint(checkpoint: PathLike, ckpt_key: Optional[str] = None):
    """Finds the recipe checkpoint with the highest ``ckpt_key`` in its ``CKPT.yaml``.

    Arguments
    ---------
    checkpoint : a recipe output folder (holding ``save/``), its ``save/`` folder, or one ``CKPT+*`` folder.
    ckpt_key : the ``CKPT.yaml`` value to maximise (``unixtime`` picks the latest). None: the first of
        :data:`SELECTION_KEYS` that the checkpoints record, i.e. the one the recipe selected by.

    Returns
    -------
    (checkpoint, save_folder, n_compared): a SpeechBrain ``Checkpoint`` (path, meta, paramfiles) holding
    ``gen_n2c.ckpt``, the folder holding ``model_config.json``, and how many were compared (0 when
    ``checkpoint`` is itself a ``CKPT+*`` folder, exported whatever it scored).
    """
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: no such folder (give the recipe's output folder or its save/ folder)")
    if path.name.startswith(CKPT_PREFIX) and (path / METAFNAME).is_file():
        save_dir, only = path.parent, path
    else:
        save_dir, only = (path / "save" if (path / "save").is_dir() else path), None
    # CKPT.yaml (with its score) is written before the parameter files: a run killed while saving, or
    # still saving, leaves a scored checkpoint with a truncated or missing file. Only complete ones count.
    ckpts, problems = read_checkpoints(save_dir)
    ckpts = [c for c in ckpts if only is None or c.path == only]
    problems = {p: why for p, why in problems.items() if only is None or p == only}
    if not ckpts and problems:
        path, problem = next(iter(problems.items()))
        raise UserError(f"{only or save_dir}: no complete checkpoint ({path.name}: {problem}; "
                        "was training killed while saving?)")
    if not ckpts:
        raise UserError(f"{save_dir}: no checkpoint found (no CKPT+*/CKPT.yaml); train the recipe first")
    ckpts = [c for c in ckpts if RECIPE_GENERATOR in c.paramfiles]
    if not ckpts:
        raise UserError(f"{only or save_dir}: no {RECIPE_GENERATOR}.ckpt (the noisy->clean generator) "
                        "in its checkpoints")
    if only is not None:  # a checkpoint chosen by hand is exported whatever it scored
        return ckpts[0], save_dir, 0
    if ckpt_key is None:
        ckpt_key = next((k for k in SELECTION_KEYS if any(_finite_number(c.meta.get(k)) for c in ckpts)),
                        SELECTION_KEYS[0])
    scored = [c for c in ckpts if _finite_number(c.meta.get(ckpt_key))]
    if not scored:
        keys = sorted({k for c in ckpts for k, v in c.meta.items() if _finite_number(v)})
        raise UserError(f"{save_dir}: no checkpoint records a numeric '{ckpt_key}' "
                        f"(recorded: {', '.join(keys) or 'nothing'}); choose one with --ckpt-key")
    # Highest key first; the most recent wins a tie.
    best = max(scored, key=lambda c: (float(c.meta[ckpt_key]), float(c.meta.get("unixtime", 0.0))))
    return best, save_dir, len(scored)


def read_model_config(save_dir: PathLike) -> Tuple[dict, int]:
    """``(generator kwargs, sample_rate)`` from the recipe's ``<save>/model_config.json``; its class is
    :func:`read_generator_class`'s."""
    path = Path(save_dir) / RECIPE_MODEL_CONFIG
    if not path.is_file():
        raise UserError(f"{path}: missing (the recipe writes it when training starts; it rebuilds the generator)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        gen, sample_rate = config[RECIPE_GENERATOR], int(config.get("sample_rate", 16000))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a valid model config ({type(err).__name__}: {first_line(err)})") from None
    if not isinstance(gen, dict) or sample_rate <= 0:
        raise ConfigError(f"{path}: '{RECIPE_GENERATOR}' must be a dict of UpCycleGenerator arguments "
                          "and sample_rate positive")
    return gen, sample_rate


def read_generator_class(save_dir: PathLike) -> str:
    """The generator class named in ``<save>/model_config.json`` (a key of
    :data:`upcycle_se.models.GENERATOR_CLASSES`); ``UpCycleGenerator`` when the run records none."""
    config = json.loads((Path(save_dir) / RECIPE_MODEL_CONFIG).read_text(encoding="utf-8"))
    name = config.get(RECIPE_GENERATOR_CLASS, "UpCycleGenerator") if isinstance(config, dict) else None
    if name not in GENERATOR_CLASSES:
        raise ConfigError(f"{Path(save_dir) / RECIPE_MODEL_CONFIG}: unknown generator class {name!r} "
                          f"(known: {', '.join(GENERATOR_CLASSES)})")
    return name


def render_hparams(template: str, generator_config: dict, sample_rate: int, header: Sequence[str] = (),
                   generator_class: str = "UpCycleGenerator", max_attenuation_db: Optional[float] = None) -> str:
    """The model folder's ``hyperparams.yaml``: ``template`` with its
    ``generator: !new:upcycle_se.models.UpCycleGenerator`` line naming ``generator_class`` and the
    generator's kwargs written under it, ``sample_rate`` set, the folder's attenuation limit
    (``max_attenuation_db``; None: the template's, none) and ``header`` comment lines on top."""
    if generator_class not in GENERATOR_CLASSES:
        raise ConfigError(f"unknown generator class {generator_class!r} (known: {', '.join(GENERATOR_CLASSES)})")
    lines = template.splitlines()
    at = [i for i, line in enumerate(lines) if line.rstrip() == _GENERATOR_LINE]
    if len(at) != 1 or (at[0] + 1 < len(lines) and lines[at[0] + 1][:1] in (" ", "\t")):
        raise ConfigError(f"the inference template needs exactly one bare '{_GENERATOR_LINE}' line")
    kwargs = yaml.safe_dump(dict(generator_config), default_flow_style=False, sort_keys=False) \
        if generator_config else ""
    lines[at[0]] = f"generator: !new:upcycle_se.models.{generator_class}"
    lines[at[0] + 1: at[0] + 1] = ["    " + line for line in kwargs.splitlines()]
    text, count = re.subn(r"^sample_rate:.*$", f"sample_rate: {int(sample_rate)}", "\n".join(lines) + "\n",
                          flags=re.MULTILINE)
    if count != 1:
        raise ConfigError("the inference template needs exactly one top-level 'sample_rate:' line")
    if max_attenuation_db is not None:
        db = check_max_attenuation_db(max_attenuation_db)
        text, count = re.subn(r"^max_attenuation_db:.*$", f"max_attenuation_db: {db}", text, flags=re.MULTILINE)
        if count != 1:
            raise ConfigError("the inference template needs exactly one top-level 'max_attenuation_db:' line")
    return "".join(f"# {line}".rstrip() + "\n" for line in header) + text


def template_path() -> Path:
    """The model folder template, ``upcycle_se/hparams/inference.yaml`` (installed with the package)."""
    path = Path(__file__).resolve().parent / "hparams" / "inference.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: the inference template is missing from this upcycle_se installation")
    return path


class ExportInfo(NamedTuple):
    """What :func:`export_model` made: the model ``folder``, the SpeechBrain ``checkpoint`` it came from,
    how many checkpoints were compared by the key (0: a ``CKPT+*`` folder given directly), and, with
    ``onnx=True``, the largest absolute difference between onnxruntime's and PyTorch's outputs."""

    folder: Path
    checkpoint: Checkpoint
    n_compared: int
    onnx_max_diff: Optional[float] = None


def generator_state(paramfiles: Dict[str, Path]) -> Dict[str, torch.Tensor]:
    """The noisy->clean generator's state_dict from a checkpoint's parameter files: the weight average
    (``gen_n2c_ema``, without ``AveragedModel``'s step counter) when the run kept one, else ``gen_n2c``."""
    name = RECIPE_GENERATOR_EMA if RECIPE_GENERATOR_EMA in paramfiles else RECIPE_GENERATOR
    state = torch.load(str(paramfiles[name]), map_location="cpu", weights_only=True)
    if name == RECIPE_GENERATOR_EMA:
        state = {k: v for k, v in state.items() if k != "n_averaged"}
    return unwrap_state_dict(state)


def export_model(checkpoint: PathLike, out: PathLike, ckpt_key: Optional[str] = None, overwrite: bool = False,
                 onnx: bool = False, max_attenuation_db: Optional[float] = None) -> ExportInfo:
    """Turns the best recipe checkpoint into a model folder for :class:`UpCycleEnhancement`.

    The folder holds ``hyperparams.yaml`` (the template, the generator's kwargs from
    ``model_config.json``, provenance comments), ``generator.ckpt`` (the ``gen_n2c`` state_dict) and, with
    ``onnx``, ``generator.onnx`` (see :func:`export_checked_onnx`). It is built in a hidden temporary folder
    beside ``out``, loaded and run once as a check, then renamed to ``out``: an interrupted or failed
    export leaves nothing under ``out``.

    Arguments
    ---------
    checkpoint : recipe output folder, its ``save/`` folder, or one ``CKPT+*`` folder.
    out : the model folder to create.
    ckpt_key : ``CKPT.yaml`` value to maximise when choosing the checkpoint.
    overwrite : replace an existing non-empty ``out``.
    onnx : also write ``generator.onnx``, checked against onnxruntime (needs ``onnx`` and ``onnxruntime``).
    max_attenuation_db : the folder's own attenuation limit in dB (its ``hyperparams.yaml``; enhancing
        applies it unless told otherwise, as the packaged ``default``'s 20 dB); None: no limit.

    Returns
    -------
    :class:`ExportInfo` (folder, checkpoint, n_compared, onnx_max_diff).
    """
    if onnx:
        _require_onnxruntime()
    max_attenuation_db = check_max_attenuation_db(max_attenuation_db)  # a bad value fails before any work
    ckpt, save_dir, n_scored = find_best_checkpoint(checkpoint, ckpt_key)
    gen_config, sample_rate = read_model_config(save_dir)
    gen_class = read_generator_class(save_dir)
    out = Path(out).expanduser().absolute()
    if out == save_dir.absolute() or out in save_dir.absolute().parents:
        raise UserError(f"{out}: the export folder must not contain the checkpoints it exports")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_key = chosen_key(ckpt.meta, ckpt_key)
    score = (f"{ckpt_key} = {ckpt.meta[ckpt_key]}, best of {n_scored} checkpoint(s) by {ckpt_key}"
             if n_scored else "checkpoint chosen by hand")
    header = [f"Exported by `upcycle-se export` from {_safe_comment(ckpt.path)}", f"({score}).", ""]
    text = render_hparams(template_path().read_text(encoding="utf-8"), gen_config, sample_rate, header, gen_class,
                          max_attenuation_db)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        state = generator_state(ckpt.paramfiles)
        torch.save(state, tmp / GENERATOR_FILE)
        check_model_folder(tmp, sample_rate)
        onnx_diff = None
        if onnx:
            generator = GENERATOR_CLASSES[gen_class](**gen_config)
            generator.load_state_dict(state)
            onnx_diff = export_checked_onnx(generator, tmp / ONNX_FILE, sample_rate)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportInfo(out, ckpt, n_scored, onnx_diff)


def export_checked_onnx(generator: torch.nn.Module, path: PathLike, sample_rate: int = 16000) -> float:
    """Writes ``generator`` as ONNX (:func:`upcycle_se.models.export_onnx`) and checks it with onnxruntime.

    The graph maps input ``wav`` ``[batch, time]`` float32 at ``sample_rate`` to output ``enhanced``
    ``[batch, time]``, with dynamic batch and time. It is run on two noise batches of different shapes
    (``[2, 0.5 s]`` and ``[1, 1.3 s]``) and compared with PyTorch's output.

    Returns
    -------
    The largest absolute difference from PyTorch's output.

    Raises
    ------
    ConfigError: the difference exceeds :data:`ONNX_TOLERANCE` times the PyTorch output's peak.
    UserError: onnx or onnxruntime is not installed.
    """
    ort = _require_onnxruntime()
    path = Path(path)
    export_onnx(generator, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(0)
    worst, allowed = 0.0, math.inf
    for shape in ((2, sample_rate // 2), (1, sample_rate * 13 // 10)):
        wav = 0.1 * torch.randn(*shape, generator=rng)
        with torch.no_grad():
            eager = generator.eval()(wav).numpy()
        (graph,) = session.run(None, {"wav": wav.numpy()})
        if graph.shape != eager.shape:
            raise ConfigError(f"{path.name}: onnxruntime returned shape {graph.shape} for input {tuple(shape)}")
        worst = max(worst, float(np.abs(graph - eager).max()))
        allowed = min(allowed, ONNX_TOLERANCE * float(np.abs(eager).max()))
    if not worst <= allowed:
        raise ConfigError(f"{path.name}: onnxruntime's output differs from PyTorch's by up to {worst:.3g} "
                          f"(allowed {allowed:.3g}); the ONNX export is not faithful")
    return worst


def _require_onnxruntime():
    """The onnxruntime module, or a one-line UserError saying how to install it (and onnx)."""
    try:
        importlib.import_module("onnx")  # torch.onnx.export needs it
        return importlib.import_module("onnxruntime")
    except ImportError as err:
        raise UserError(f"ONNX export needs onnx and onnxruntime ({err.name} is missing): "
                        "pip install onnx onnxruntime") from None


def replace_folder(tmp: Path, out: Path) -> None:
    """Moves the finished folder ``tmp`` (a sibling of ``out``) to ``out`` with the usual permissions,
    replacing an existing ``out`` by renames only: ``out`` is at every instant the old or the new folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def check_model_folder(folder: Path, sample_rate: int) -> None:
    """Loads a model folder on the CPU and enhances 0.1 s of noise: the export is usable."""
    enhancer = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu"})
    noise = 0.01 * torch.randn(1, sample_rate // 10, generator=torch.Generator().manual_seed(0))
    out = enhancer.enhance_batch(noise)
    if out.shape != noise.shape or not torch.isfinite(out).all():
        raise ConfigError(f"the exported generator gives a bad output (shape {tuple(out.shape)}, "
                          f"finite: {bool(torch.isfinite(out).all())})")


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _safe_comment(value) -> str:
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def import_reference(checkpoint, out, overwrite: bool = False, sample_rate: int = 16000) -> Path:
    """Writes a model folder for :class:`upcycle_se.inference.UpCycleEnhancement` (and stock SpeechBrain)
    from the authors' checkpoint (``upcycle-se import-reference``; the mapping is
    :mod:`upcycle_se.reference_import`'s): ``generator.ckpt`` from ``G_A2B`` and, from a full checkpoint,
    ``gen_c2n.ckpt``, ``disc_noisy.ckpt``, ``disc_clean.ckpt`` for ``--init_from``. Built in a hidden folder
    beside ``out`` and checked (loaded, run) before it is renamed to ``out``: a failure leaves nothing there.

    Returns
    -------
    The model folder.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    nets = load_reference_checkpoint(checkpoint)
    enhancer = PaperGenerator()
    states = {"generator": generator_state_from_reference(nets["G_A2B"], enhancer, "G_A2B")}
    if "G_B2A" in nets:
        states["gen_c2n"] = generator_state_from_reference(nets["G_B2A"], PaperGenerator(mode="map"), "G_B2A")
    for ours, theirs in (("disc_noisy", "D_A"), ("disc_clean", "D_B")):
        if theirs in nets:
            states[ours] = discriminator_state_from_reference(nets[theirs], theirs)
    header = [f"Imported by `upcycle-se import-reference` from {str(Path(checkpoint).name)!r}: the authors'",
              "Up-Cycle-SENet (github.com/towardsDLCV/Up-Cycle-SENet, MIT licence), G_A2B as the enhancer.", ""]
    text = render_hparams(template_path().read_text(encoding="utf-8"), enhancer.config, sample_rate, header,
                          generator_class="PaperGenerator")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        (tmp / HPARAMS_FILE).write_text(text, encoding="utf-8")
        torch.save(states.pop("generator"), tmp / GENERATOR_FILE)
        for name, state in states.items():
            torch.save(state, tmp / f"{name}.ckpt")
        check_model_folder(tmp, sample_rate)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
