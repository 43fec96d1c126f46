"""Up-Cycle-SENet models: the complex U-Net generator and the waveform discriminators."""

from upcycle_se.models.discriminator import DISCRIMINATOR_PRESETS, MultiScaleDiscriminator, WaveDiscriminator
from upcycle_se.models.generator import GENERATOR_PRESETS, UpCycleGenerator, export_onnx

__all__ = [
    "UpCycleGenerator",
    "WaveDiscriminator",
    "MultiScaleDiscriminator",
    "GENERATOR_PRESETS",
    "DISCRIMINATOR_PRESETS",
    "export_onnx",
]
