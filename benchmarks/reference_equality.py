"""Proves the `paper` networks equal the authors' code: builds their networks from a checkout of
github.com/towardsDLCV/Up-Cycle-SENet, saves them as their ``main.py`` does, imports that file with
``upcycle-se import-reference`` and compares the outputs.

    python benchmarks/reference_equality.py /path/to/Up-Cycle-SENet [--out benchmarks/reference_equality.txt]

Skipped (exit code 0, a message) without the path. Compared, with random weights and randomised batch-norm
statistics (so that every layer matters):

- the conv STFT and its inverse against their ``ConvSTFT``/``ConviSTFT``;
- ``G_A2B`` (noisy -> clean, polar mask) and ``G_B2A`` (clean -> noisy, mapping) in eval mode, batch 2, at
  lengths their network accepts (32,000 samples, their training crop; 32,050 and 24,037, which are not
  multiples of the hop; their output stops at the last full hop, so the common part is compared);
- both in train mode (batch statistics, dropout) from the same seed: dropout masks are drawn in their
  memory order, so the same elements are dropped;
- the imported model folder run through SpeechBrain's stock ``WaveformEnhancement`` (fp32) against their
  ``Generator.forward`` in eval mode;
- ``D_A``/``D_B`` against :class:`~upcycle_se.models.MultiScaleDiscriminator` with one scale.

Pass: every largest absolute difference <= 1e-4 x the reference output's peak. Their code imports a few
packages it does not use for these networks (librosa, einops, fvcore); where they are missing they are
replaced by empty stand-ins, and the window name "hanning", which newer scipy
no longer knows, is mapped to "hann" (the same periodic Hann window).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCE = 1e-4


def _stub_unused_imports() -> list:
    """Empty stand-ins for packages their modules import but these networks never call."""
    stubbed = []
    for name, attrs in (("librosa", {}), ("einops", {"rearrange": None, "repeat": None}),
                        ("fvcore", {}), ("fvcore.nn", {}), ("fvcore.nn.flop_count", {"flop_count": None})):
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
            stubbed.append(name)
    # scipy 1.5 (their pin) took "hanning" for the Hann window; newer scipy only takes "hann".
    import scipy.signal

    get_window = scipy.signal.get_window
    if getattr(get_window, "__name__", "") != "get_window_with_hanning":
        def get_window_with_hanning(window, *a, **kw):
            return get_window("hann" if window == "hanning" else window, *a, **kw)

        scipy.signal.get_window = get_window_with_hanning
        stubbed.append("scipy.signal.get_window('hanning') -> 'hann'")
    return stubbed


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random batch-norm affine parameters and running statistics, and non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Conv1d)) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))


def _rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    n = min(ours.shape[-1], theirs.shape[-1])
    ours, theirs = ours[..., :n], theirs[..., :n]
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", nargs="?", help="a checkout of towardsDLCV/Up-Cycle-SENet")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reference_equality.txt"))
    args = parser.parse_args(argv)
    if not args.reference or not (Path(args.reference) / "models" / "generator.py").is_file():
        print("skipped: give the path of a checkout of towardsDLCV/Up-Cycle-SENet")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    stubbed = _stub_unused_imports()
    sys.path.insert(0, str(Path(args.reference).resolve()))
    from data.conv_stft import ConvSTFT as TheirSTFT, ConviSTFT as TheirISTFT  # noqa: E402
    from models.discriminator import Discriminator  # noqa: E402
    from models.generator import Generator  # noqa: E402
    from models.generator_C2N import Generator_C2N  # noqa: E402
    from speechbrain.inference.enhancement import WaveformEnhancement  # noqa: E402

    from upcycle_se.inference import UpCycleEnhancement  # noqa: E402
    from upcycle_se.models import MultiScaleDiscriminator, PaperGenerator  # noqa: E402
    from upcycle_se.nnet.stft import ConvSTFT  # noqa: E402
    from upcycle_se.export import import_reference  # noqa: E402

    torch.manual_seed(0)
    nets = {"G_A2B": Generator(args=None), "G_B2A": Generator_C2N(args=None),
            "D_A": Discriminator(), "D_B": Discriminator()}
    for i, net in enumerate(nets.values()):
        _randomise(net, i)
    rows, worst = [], 0.0

    def record(name: str, value: float) -> None:
        nonlocal worst
        worst = max(worst, value)
        rows.append(f"{name:<58} {value:.2e}  {'ok' if value <= TOLERANCE else 'FAIL'}")

    g = torch.Generator().manual_seed(1)
    wav = {n: 0.3 * torch.randn(2, n, generator=g) for n in (32000, 32050, 24037)}

    # The STFT pair alone.
    theirs_stft = TheirSTFT(400, 100, 512, "hanning", "complex")
    theirs_istft = TheirISTFT(400, 100, 512, "hanning", "complex")
    ours_stft = ConvSTFT()
    spec_t = theirs_stft(wav[32000].unsqueeze(1))
    spec_o = ours_stft.stft(wav[32000])
    record("conv STFT", _rel(spec_o.reshape(spec_t.shape), spec_t))
    record("conv iSTFT of a modified spectrum", _rel(ours_stft.istft(spec_o * 0.7 + 0.01, 32000),
                                                     theirs_istft(spec_t * 0.7 + 0.01).squeeze(1)))

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint_88.pth"
        torch.save({"epoch": 88, "PESQ": 2.86, **{k: v.state_dict() for k, v in nets.items()},
                    "G_optimizer": torch.optim.Adam(nets["G_A2B"].parameters()).state_dict()}, ckpt)
        folder = import_reference(ckpt, Path(tmp) / "model")
        ours = {"G_A2B": PaperGenerator(), "G_B2A": PaperGenerator(mode="map")}
        ours["G_A2B"].load_state_dict(torch.load(folder / "generator.ckpt", weights_only=True))
        ours["G_B2A"].load_state_dict(torch.load(folder / "gen_c2n.ckpt", weights_only=True))
        for key, name in (("D_A", "disc_noisy"), ("D_B", "disc_clean")):
            ours[key] = MultiScaleDiscriminator.from_preset("paper", n_scales=1)
            ours[key].load_state_dict(torch.load(folder / f"{name}.ckpt", weights_only=True))

        for key in ("G_A2B", "G_B2A"):
            theirs, mine = nets[key], ours[key]
            for n, x in wav.items():
                theirs.eval(), mine.eval()
                with torch.no_grad():
                    record(f"{key} eval, {n} samples", _rel(mine(x), theirs(x)))
            for n in (32000,):
                # Copies: a train-mode pass updates the batch-norm running statistics.
                theirs, mine = copy.deepcopy(theirs).train(), copy.deepcopy(mine).train()
                torch.manual_seed(5)
                with torch.no_grad():
                    ref = theirs(wav[n])
                torch.manual_seed(5)
                with torch.no_grad():
                    got = mine(wav[n])
                record(f"{key} train (batch statistics, dropout), {n} samples", _rel(got, ref))
        for key in ("D_A", "D_B"):
            with torch.no_grad():
                record(f"{key}", _rel(ours[key](wav[32000])[0], nets[key](wav[32000])))

        stock = WaveformEnhancement.from_hparams(source=str(folder), savedir=str(folder), run_opts={"device": "cpu"})
        ours_iface = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu", "precision": "fp32"})
        nets["G_A2B"].eval()
        for n in (32050, 24037):
            x = wav[n]
            with torch.no_grad():
                ref = nets["G_A2B"](x)
                record(f"stock WaveformEnhancement (fp32), {n} samples",
                       _rel(stock.enhance_batch(x, lengths=torch.ones(2)), ref))
                record(f"UpCycleEnhancement.enhance_batch (fp32), {n} samples", _rel(ours_iface.enhance_batch(x), ref))

    params = {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}
    lines = [
        "Equality of upcycle-se's `paper` networks with the authors' code (benchmarks/reference_equality.py)",
        f"reference: {args.reference}; stand-ins for unused imports: {', '.join(stubbed) or 'none'}",
        f"torch {torch.__version__}; parameters (theirs = ours): "
        + ", ".join(f"{k} {v:,}" for k, v in params.items()),
        f"largest |ours - theirs| / peak(theirs), pass <= {TOLERANCE:g}:",
        *rows,
        f"result: {'PASS' if worst <= TOLERANCE else 'FAIL'} (worst {worst:.2e})",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(args.out).write_text(text)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
