"""The authors' released Up-Cycle-SENet checkpoint as a model folder (``upcycle-se import-reference``).

The authors' ``main.py`` saves a dict with ``G_A2B``, ``G_B2A``, ``D_A``, ``D_B`` (state dicts, keys
possibly prefixed ``module.`` by DDP), their optimizer states, ``epoch`` and ``PESQ``. In their code domain
A is noisy speech and B clean speech, so ``G_A2B`` is the enhancer. A bare ``G_A2B`` state dict is accepted
too. Their layers keep real and imaginary parts in two real convolutions (``real_conv``/``imag_conv``, each
with a bias) and two batch norms (``bn_re``/``bn_im``); :class:`upcycle_se.models.PaperGenerator` holds the
same numbers as complex weights, a complex bias ``(b_re - b_im, b_re + b_im)`` and one batch norm over
``2*C`` channels. The mapping is exact.

The model folder holds what ``upcycle-se export`` writes (``hyperparams.yaml``, ``generator.ckpt``) and,
from a full checkpoint, the other three networks under the recipe's module names (``gen_c2n.ckpt``,
``disc_noisy.ckpt``, ``disc_clean.ckpt``), so that ``--init_from`` fine-tunes all four.

This module maps the weights; :func:`upcycle_se.export.import_reference` writes the model folder::

    from upcycle_se.export import import_reference

    import_reference("checkpoint_88.pth", "models/upcycle-paper")
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from upcycle_se.errors import ConfigError, UserError
from upcycle_se.models import MultiScaleDiscriminator, PaperGenerator
from upcycle_se.nnet.complex import ComplexBatchNorm2d, ComplexConv2d, ComplexConvTranspose2d

__all__ = [
    "EXTRA_NETWORKS",
    "load_reference_checkpoint",
    "generator_state_from_reference",
    "discriminator_state_from_reference",
]

StateDict = Dict[str, torch.Tensor]

#: The networks a full checkpoint adds to the model folder: recipe module name -> the authors' key.
EXTRA_NETWORKS: Dict[str, str] = {"gen_c2n": "G_B2A", "disc_noisy": "D_A", "disc_clean": "D_B"}

# Buffers of the authors' conv STFT: derived from its sizes, rebuilt here, so not imported.
_STFT_BUFFERS = re.compile(r"^i?stft\.(weight|window|enframe)$")


def load_reference_checkpoint(path) -> Dict[str, StateDict]:
    """The authors' networks from ``path``: ``{"G_A2B": ..., ["G_B2A", "D_A", "D_B"]}`` with any DDP
    ``module.`` prefix removed. Loaded with ``weights_only=True``: a file that needs code to load is refused.

    Raises
    ------
    UserError: no such file, not a checkpoint, or not one of the authors' Up-Cycle-SENet checkpoints.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise UserError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    # numpy scalars (e.g. a PESQ kept as numpy.float64) are data, not code: allowed.
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    try:
        safe.append(np._core.multiarray.scalar)
    except AttributeError:  # pragma: no cover - numpy < 2
        safe.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = " ".join(str(err).split())[:160]
        raise UserError(f"{path}: refused, it is not a plain checkpoint of tensors and numbers "
                        f"(loading it would run code: {first})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:120]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a checkpoint of the authors' main.py (a {type(obj).__name__}, not a dict)")
    if "G_A2B" in obj:
        nets = {k: obj[k] for k in ("G_A2B", *EXTRA_NETWORKS.values()) if k in obj}
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        nets = {"G_A2B": obj}
    else:
        keys = ", ".join(sorted(map(str, obj))[:6])
        raise UserError(f"{path}: not a checkpoint of the authors' main.py (no G_A2B; keys: {keys})")
    for name, state in nets.items():
        if not isinstance(state, dict):
            raise UserError(f"{path}: {name} is a {type(state).__name__}, not a state dict")
        nets[name] = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return nets


def _reference_module_name(ours: str, n_rates: int) -> str:
    """The authors' name of :class:`PaperGenerator` sub-module ``ours`` (e.g. ``down.0.res.conv1`` ->
    ``d1.res.conv_1``)."""
    rules: List[Tuple[str, Callable[[re.Match], str]]] = [
        (r"^down\.(\d+)\.res\.", lambda m: f"d{int(m[1]) + 1}.res."),
        (r"^down\.(\d+)\.resample$", lambda m: f"d{int(m[1]) + 1}.conv"),
        (r"^up\.(\d+)\.res\.", lambda m: f"u{int(m[1]) + 1}.res."),
        (r"^up\.(\d+)\.resample$", lambda m: f"u{int(m[1]) + 1}.conv"),
        (r"^bridge\.", lambda m: "aspp1."),
        (r"^head\.", lambda m: "last."),
        (r"\.(norm|conv)([12])$", lambda m: f".{m[1]}_{m[2]}"),
        (r"\.atrous\.(\d+)\.0\.", lambda m: f".convs.{m[1]}.0."),
        (r"\.atrous\.(\d+)\.1$", lambda m: f".convs.{m[1]}.1"),
        (r"\.pool\.0\.", lambda m: f".convs.{n_rates}.layer.1."),
        (r"\.pool\.1$", lambda m: f".convs.{n_rates}.layer.2"),
        (r"\.depthwise$", lambda m: ".conv_3x3"),
        (r"\.norm$", lambda m: ".bn"),
        (r"\.pointwise$", lambda m: ".conv_1x1"),
    ]
    name = ours
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def _take(state: StateDict, key: str, shape: torch.Size, used: set, what: str) -> torch.Tensor:
    if key not in state:
        raise ConfigError(f"{what}: missing key {key!r}")
    value = state[key]
    if tuple(value.shape) != tuple(shape):
        raise ConfigError(f"{what}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    used.add(key)
    return value.float() if value.is_floating_point() else value


def generator_state_from_reference(state: StateDict, generator: PaperGenerator, what: str = "G_A2B") -> StateDict:
    """``generator``'s state dict from an authors' generator state dict (``Generator`` or
    ``Generator_C2N``, no ``module.`` prefix). Every key of theirs must be used and every one of ours set.

    Raises
    ------
    ConfigError: a missing key (named), a shape mismatch (key and both shapes), or an unexpected key (an
    other architecture's checkpoint).
    """
    if "proj.real_conv.weight" not in state:
        first = ", ".join(sorted(state)[:3])
        raise ConfigError(f"{what}: not the authors' Up-Cycle-SENet generator (no 'proj.real_conv.weight'; "
                          f"its keys start {first})")
    n_rates = len(generator.config["aspp_rates"])
    out: StateDict = {}
    used: set = set()
    for name, module in generator.named_modules():
        theirs = _reference_module_name(name, n_rates)
        if isinstance(module, (ComplexConv2d, ComplexConvTranspose2d)):
            kind = "Transconv" if isinstance(module, ComplexConvTranspose2d) else "conv"
            shape = module.weight_real.shape
            out[f"{name}.weight_real"] = _take(state, f"{theirs}.real_{kind}.weight", shape, used, what)
            out[f"{name}.weight_imag"] = _take(state, f"{theirs}.imag_{kind}.weight", shape, used, what)
            if module.bias_real is not None:
                b_re = _take(state, f"{theirs}.real_{kind}.bias", module.bias_real.shape, used, what)
                b_im = _take(state, f"{theirs}.imag_{kind}.bias", module.bias_real.shape, used, what)
                # real = conv_re(x_re) - conv_im(x_im), imag = conv_im(x_re) + conv_re(x_im): each adds its bias
                out[f"{name}.bias_real"], out[f"{name}.bias_imag"] = b_re - b_im, b_re + b_im
        elif isinstance(module, ComplexBatchNorm2d):
            for field, value in module.bn.state_dict().items():
                half = value.shape if field == "num_batches_tracked" else (value.shape[0] // 2,)
                re_ = _take(state, f"{theirs}.bn_re.{field}", half, used, what)
                im_ = _take(state, f"{theirs}.bn_im.{field}", half, used, what)
                out[f"{name}.bn.{field}"] = re_ if field == "num_batches_tracked" else torch.cat([re_, im_])
    unexpected = sorted(k for k in state if k not in used and not _STFT_BUFFERS.match(k))
    if unexpected:
        raise ConfigError(f"{what}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all): not the "
                          "authors' Up-Cycle-SENet generator")
    return out


def discriminator_state_from_reference(state: StateDict, what: str = "D_A") -> StateDict:
    """The state dict of ``MultiScaleDiscriminator.from_preset("paper", n_scales=1)`` from an authors'
    ``Discriminator`` state dict (old-style ``weight_g``/``weight_v`` or parametrized weight norm)."""
    disc = MultiScaleDiscriminator.from_preset("paper", n_scales=1)
    expected = disc.state_dict()
    out: StateDict = {}
    used: set = set()
    for i in range(7):
        theirs = {0: "convLayer_1.1", 6: "convLayer_7"}.get(i, f"convLayer_{i + 1}.0")
        ours = "discriminators.0." + (f"layers.{i}" if i < 6 else "score")
        for field, old in (("original0", "weight_g"), ("original1", "weight_v")):
            key = f"{ours}.parametrizations.weight.{field}"
            new_key = f"{theirs}.parametrizations.weight.{field}"
            src = new_key if new_key in state else f"{theirs}.{old}"
            out[key] = _take(state, src, expected[key].shape, used, what)
        out[f"{ours}.bias"] = _take(state, f"{theirs}.bias", expected[f"{ours}.bias"].shape, used, what)
    unexpected = sorted(k for k in state if k not in used)
    if unexpected:
        raise ConfigError(f"{what}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all): not the "
                          "authors' discriminator")
    return out
