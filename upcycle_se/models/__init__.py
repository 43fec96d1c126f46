"""Up-Cycle-SENet models: the complex U-Net generators and the waveform discriminators.

- :class:`PaperGenerator`: the authors' generator, layer for layer (presets ``paper``, ``paper_small``);
- :class:`UpCycleGenerator`: this project's redesign of it (presets ``redesign``, ``redesign_base``,
  ``redesign_small``), which the packaged models use;
- :class:`WaveDiscriminator` / :class:`MultiScaleDiscriminator`: the authors' discriminator (``paper``)
  and a small one, at one or more waveform scales.
"""
from typing import Any

import torch.nn as nn

from upcycle_se.errors import ConfigError
from upcycle_se.models.discriminator import DISCRIMINATOR_PRESETS, MultiScaleDiscriminator, WaveDiscriminator
from upcycle_se.models.generator import GENERATOR_PRESETS, PRESET_ALIASES, UpCycleGenerator, export_onnx
from upcycle_se.models.paper import PAPER_PRESETS, PaperGenerator

#: The generator classes a model folder or a recipe run may name (``model_config.json``'s ``gen_n2c_class``,
#: the ``generator: !new:upcycle_se.models.<class>`` line of a model folder).
GENERATOR_CLASSES = {"UpCycleGenerator": UpCycleGenerator, "PaperGenerator": PaperGenerator}



def build_generator(preset: str, mode: str = "mask", mask_type: str = "complex", **overrides: Any) -> nn.Module:
    """The generator of ``preset``: the authors' network (``paper``, ``paper_small``:
    :class:`PaperGenerator`) or the redesign (``redesign``, ``redesign_base``, ``redesign_small``:
    :class:`UpCycleGenerator`). ``mode`` is ``mask`` (noisy -> clean) or ``map`` (clean -> noisy);
    ``mask_type`` (``complex``, or the redesign's ``magnitude``) is used in ``mask`` mode."""
    if preset in PAPER_PRESETS:
        if mode == "mask" and mask_type != "complex":
            raise ConfigError(f"generator preset {preset!r} has only the paper's complex (polar) mask, "
                              f"not mask_type={mask_type!r}")
        return PaperGenerator.from_preset(preset, mode=mode, **overrides)
    if preset not in GENERATOR_PRESETS and preset not in PRESET_ALIASES:
        known = sorted(PAPER_PRESETS) + sorted(GENERATOR_PRESETS) + sorted(PRESET_ALIASES)
        raise ConfigError(f"unknown generator preset {preset!r}; choose one of {', '.join(known)}")
    if mode == "mask":
        overrides = {"mask_type": mask_type, **overrides}
    return UpCycleGenerator.from_preset(preset, mode=mode, **overrides)


__all__ = [
    "build_generator",
    "PRESET_ALIASES",
    "GENERATOR_CLASSES",
    "UpCycleGenerator",
    "PaperGenerator",
    "PAPER_PRESETS",
    "WaveDiscriminator",
    "MultiScaleDiscriminator",
    "GENERATOR_PRESETS",
    "DISCRIMINATOR_PRESETS",
    "export_onnx",
]
