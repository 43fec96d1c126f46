"""Model size and cost: parameter counts and multiply-accumulates (MACs) per second of audio.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
products; a MAC is two FLOPs), extended to the direct oneDNN convolutions of
:mod:`upcycle_se.nnet.complex`. FFTs and element-wise operations are not counted, as usual for MAC
figures.

Run ``python -m upcycle_se.models.profile`` to print the table of the generator and discriminator
presets (parameters, GMACs per second of audio, eval-mode forward time on 2 s of audio).

Authors
 * upcycle-se contributors 2025
"""

import time
from typing import Dict

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

__all__ = ["count_parameters", "flop_counter", "macs_per_second", "forward_seconds", "profile_model"]


def _onednn_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.mkldnn_convolution`` (not in torch's FLOP registry), as for any convolution."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def flop_counter() -> FlopCounterMode:
    """A silent :class:`FlopCounterMode` that also counts direct oneDNN convolutions."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mkldnn_convolution: _onednn_conv_flop})


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def macs_per_second(module: nn.Module, sample_rate: int = 16000, seconds: float = 1.0) -> float:
    """MACs of one eval-mode forward pass on ``seconds`` of audio (batch 1), divided by ``seconds``.

    ``module`` must map a waveform ``[batch, time]`` to anything. A few seconds average out the
    padding of the last frames.
    """
    wav = torch.zeros(1, int(round(sample_rate * seconds)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), flop_counter() as counter:
            module(wav)
    finally:
        module.train(was_training)
    return counter.get_total_flops() / 2.0 / seconds


def forward_seconds(module: nn.Module, sample_rate: int = 16000, seconds: float = 2.0, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of one eval-mode forward pass on ``seconds`` of audio (batch 1)."""
    wav = torch.randn(1, int(round(sample_rate * seconds))) * 0.1
    was_training = module.training
    module.eval()
    best = float("inf")
    try:
        with torch.no_grad():
            module(wav)  # warm-up: allocations and kernel selection
            for _ in range(repeats):
                start = time.perf_counter()
                module(wav)
                best = min(best, time.perf_counter() - start)
    finally:
        module.train(was_training)
    return best


def profile_model(module: nn.Module, sample_rate: int = 16000, timing: bool = True) -> Dict[str, float]:
    """``{"params", "gmacs_per_second"[, "forward_s_2s"]}`` of a waveform model."""
    stats = {
        "params": count_parameters(module),
        "gmacs_per_second": macs_per_second(module, sample_rate, seconds=4.0) / 1e9,
    }
    if timing:
        stats["forward_s_2s"] = forward_seconds(module, sample_rate)
    return stats


def _main() -> None:
    from upcycle_se.models import PAPER_PRESETS, MultiScaleDiscriminator, PaperGenerator, UpCycleGenerator
    from upcycle_se.models.discriminator import DISCRIMINATOR_PRESETS
    from upcycle_se.models.generator import GENERATOR_PRESETS

    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'model':<34}{'params':>12}{'GMACs/s':>10}{'fwd 2s (s)':>12}")
    models = {f"PaperGenerator[{p}]": PaperGenerator.from_preset(p) for p in PAPER_PRESETS}
    models.update({f"UpCycleGenerator[{p}]": UpCycleGenerator.from_preset(p) for p in GENERATOR_PRESETS})
    models.update({f"MultiScaleDiscriminator[{p}]": MultiScaleDiscriminator.from_preset(p)
                   for p in DISCRIMINATOR_PRESETS})
    for name, model in models.items():
        s = profile_model(model)
        print(f"{name:<34}{s['params']:>12,}{s['gmacs_per_second']:>10.3f}{s['forward_s_2s']:>12.3f}")


if __name__ == "__main__":
    _main()
