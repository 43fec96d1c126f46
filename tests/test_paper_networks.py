"""The authors' networks (`paper` presets), their conv STFT, the paper recipe's settings, and the importer of
the authors' checkpoint (on a checkpoint built with their key names and shapes, tests/data/reference_keys.json,
read off their code). Equality with their code itself: benchmarks/reference_equality.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from upcycle_se.cli import main as cli_main
from upcycle_se.errors import ConfigError
from upcycle_se.models import MultiScaleDiscriminator, PaperGenerator, UpCycleGenerator, build_generator
from upcycle_se.models.paper import reference_dropout
from upcycle_se.nnet.stft import ConvSTFT
from upcycle_se.recipe import load_hparams

from tests.brain_step import training_batch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_KEYS = json.loads((ROOT / "tests" / "data" / "reference_keys.json").read_text())


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sizes_are_the_authors():
    # Parameter counts of the authors' Generator, Generator_C2N and Discriminator (their code, torch 2.14).
    assert count(PaperGenerator()) == 9_292_066
    assert count(PaperGenerator(mode="map")) == 9_292_066
    assert count(MultiScaleDiscriminator.from_preset("paper", n_scales=1)) == 5_641_362
    assert sum(math.prod(s) for k, s in REFERENCE_KEYS["G_A2B"].items()
               if "running" not in k and "num_batches" not in k and "stft" not in k) == 9_292_066
    assert count(PaperGenerator.from_preset("paper_small")) == 2_332_050


def test_build_generator_dispatches_presets():
    assert isinstance(build_generator("paper"), PaperGenerator)
    assert isinstance(build_generator("small"), UpCycleGenerator)
    assert build_generator("base").config == UpCycleGenerator.from_preset("redesign_base").config
    with pytest.raises(ConfigError, match="only the paper's complex"):
        build_generator("paper", mask_type="magnitude")
    with pytest.raises(ConfigError, match="'paper' is now 'redesign'"):
        UpCycleGenerator.from_preset("paper")
    with pytest.raises(ConfigError, match="unknown generator preset 'huge'"):
        build_generator("huge")


def test_conv_stft_frames_and_reconstruction():
    stft = ConvSTFT()
    wav = torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    spec = stft.stft(wav)
    assert spec.shape == (2, 2, 257, 323) and stft.n_frames(32000) == 323
    assert stft.length_for_frames(323) == 32000
    # The window sits at the frame start: frame 3 covers samples [3*100 - 300, 3*100 + 100) = [0, 400).
    frame = torch.fft.rfft(wav[0, :400] * torch.hann_window(400, dtype=torch.float64).float(), n=512)
    assert torch.allclose(spec[0, 0, :, 3], frame.real, atol=1e-3)
    assert torch.allclose(spec[0, 1, :, 3], frame.imag, atol=1e-3)
    assert (stft.istft(spec, 32000) - wav).abs().max() < 1e-4


def test_paper_generator_any_length_and_valid_lengths():
    gen = PaperGenerator.from_preset("paper_small").eval()
    for length in (1, 100, 2000, 8000, 12345):
        valid = gen.valid_length(length)
        assert valid >= length and gen.stft.n_frames(valid) % 8 == 3
        with torch.no_grad():
            out, spec = gen(torch.randn(2, length) * 0.1, return_spec=True)
        assert out.shape == (2, length) and out.abs().max() <= 1.0
        assert spec.shape == (2, 2, 257, gen.stft.n_frames(length))
    assert gen.valid_length(32000) == 32000 and gen.valid_length(32050) == 32050  # their 2 s crops: untouched
    assert gen.valid_length(32100) == 32800  # 324 frames -> 331


def test_polar_mask_scales_magnitude_and_adds_phase():
    gen = PaperGenerator.from_preset("paper_small")
    g = torch.Generator().manual_seed(1)
    spec, est = torch.randn(1, 2, 257, 11, generator=g), torch.randn(1, 2, 257, 11, generator=g)
    out = torch.complex(*gen.apply_output(spec, est).unbind(1))
    x, m = torch.complex(*spec.unbind(1)), torch.complex(*est.unbind(1))
    assert torch.allclose(out.abs(), torch.tanh(m.abs()) * torch.sqrt(x.abs() ** 2 + 1e-8), atol=1e-5)
    assert torch.allclose(out, out.abs() * torch.exp(1j * (x.angle() + m.angle())), atol=1e-5)


def test_dropout_mask_is_drawn_in_the_authors_layout():
    x = torch.randn(2, 6, 5, 4)  # 3 complex channels
    torch.manual_seed(3)
    ours = reference_dropout(x, 0.5, training=True)
    theirs_layout = torch.stack(x.chunk(2, dim=1), dim=-1).contiguous()  # [B, C, F, N, 2]
    torch.manual_seed(3)
    theirs = F.dropout(theirs_layout, 0.5, training=True)
    assert torch.equal(ours, torch.cat(theirs.unbind(-1), dim=1))
    assert torch.equal(reference_dropout(x, 0.5, training=False), x)


def test_paper_recipe_has_the_authors_settings(tmp_path):
    hp = load_hparams(str(ROOT / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle.yaml"),
                      {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out")})
    assert isinstance(hp["modules"]["gen_n2c"], PaperGenerator) and hp["modules"]["gen_c2n"].mode == "map"
    disc = hp["modules"]["disc_clean"]
    assert len(disc.discriminators) == 1 and disc.config["first_padding"] == "reflect"
    assert hp["max_grad_norm"] == 0 and hp["crop_samples"] == 32000 and hp["batch_size"] == 4
    assert (hp["lr"], hp["n_epochs"], hp["n_epochs_decay"], hp["lr_policy"]) == (2e-4, 70, 30, "cosine")
    loss = hp["loss"]
    assert (loss["adversarial_weight"], loss["cycle_weight"], loss["identity_weight"]) == (0.5, 10.0, 5.0)


def test_a_training_step_of_the_paper_small_generator(tmp_path):
    from tests.brain_step import small_brain

    import speechbrain as sb

    brain = small_brain(tmp_path, generator_preset="paper_small", max_grad_norm=0.0)
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    before = brain.modules["gen_n2c"].proj.weight_real.detach().clone()
    loss = brain.fit_batch(training_batch(0))
    assert torch.isfinite(loss) and brain.optimizer_step == 1
    assert not torch.equal(before, brain.modules["gen_n2c"].proj.weight_real)


# ------------------------------------------------------------------------------------------ importer
def reference_checkpoint(path: Path, seed: int = 0, prefix: str = "module.", **changes) -> Path:
    """A checkpoint as the authors' main.py saves it, with their key names and shapes and random values."""
    g = torch.Generator().manual_seed(seed)

    def state(shapes):
        out = {}
        for key, shape in shapes.items():
            if key.endswith("num_batches_tracked"):
                out[prefix + key] = torch.tensor(5)
            elif key.endswith("running_var") or key.endswith("weight_g"):
                out[prefix + key] = 0.5 + torch.rand(shape, generator=g)
            else:
                out[prefix + key] = 0.05 * torch.randn(shape, generator=g)
        return out

    ckpt = {"epoch": 88, "PESQ": np.float64(2.86), "G_A2B": state(REFERENCE_KEYS["G_A2B"]),
            "G_B2A": state(REFERENCE_KEYS["G_B2A"]), "D_A": state(REFERENCE_KEYS["D_A"]),
            "D_B": state(REFERENCE_KEYS["D_A"]), "G_optimizer": {"state": {}, "param_groups": [{"lr": 2e-4}]}}
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    ckpt = reference_checkpoint(tmp / "checkpoint_88.pth")
    assert cli_main(["import-reference", str(ckpt), "--out", str(tmp / "model")]) == 0
    return ckpt, tmp / "model"


def test_import_maps_the_authors_layers_exactly(imported):
    ckpt, folder = imported
    theirs = {k[len("module."):]: v for k, v in torch.load(ckpt, weights_only=False)["G_A2B"].items()}
    gen = PaperGenerator().eval()
    gen.load_state_dict(torch.load(folder / "generator.ckpt", weights_only=True))
    # Their ComplexConv2d on [B, C, F, N, 2]: real = conv_re(x_re) - conv_im(x_im), imag = conv_im(x_re) + conv_re(x_im)
    x = torch.randn(2, 1, 9, 6, 2)
    w_re, b_re, w_im, b_im = (theirs[f"proj.{p}_conv.{q}"] for p in ("real", "imag") for q in ("weight", "bias"))
    def conv(inp, w, b):
        return F.conv2d(inp, w, b, padding=(2, 3))
    ref_re = conv(x[..., 0], w_re, b_re) - conv(x[..., 1], w_im, b_im)
    ref_im = conv(x[..., 0], w_im, b_im) + conv(x[..., 1], w_re, b_re)
    got = gen.proj(torch.cat([x[..., 0], x[..., 1]], dim=1))
    assert torch.allclose(got, torch.cat([ref_re, ref_im], dim=1), atol=1e-5)
    # Their ComplexBatchNorm2d: bn_re on the real parts, bn_im on the imaginary ones.
    h = torch.randn(2, 32, 5, 4)
    norm = gen.down[0].res.norm1
    bn = {p: theirs[f"d1.res.norm_1.bn_{p}.{f}"] for p in ("re", "im") for f in ("running_mean",)}
    ref = F.batch_norm(h[:, :16], bn["re"], theirs["d1.res.norm_1.bn_re.running_var"],
                       theirs["d1.res.norm_1.bn_re.weight"], theirs["d1.res.norm_1.bn_re.bias"])
    assert torch.allclose(norm(h)[:, :16], ref, atol=1e-5)


def test_imported_folder_runs_in_both_interfaces_and_keeps_all_networks(imported):
    from speechbrain.inference.enhancement import WaveformEnhancement

    from upcycle_se.inference import UpCycleEnhancement

    _, folder = imported
    assert sorted(p.name for p in folder.glob("*.ckpt")) == [
        "disc_clean.ckpt", "disc_noisy.ckpt", "gen_c2n.ckpt", "generator.ckpt"]
    assert "!new:upcycle_se.models.PaperGenerator" in (folder / "hyperparams.yaml").read_text()
    wav = 0.1 * torch.randn(1, 24037, generator=torch.Generator().manual_seed(2))
    ours = UpCycleEnhancement.from_hparams(source=folder, run_opts={"device": "cpu", "precision": "fp32"})
    stock = WaveformEnhancement.from_hparams(source=str(folder), savedir=str(folder), run_opts={"device": "cpu"})
    a, b = ours.enhance_batch(wav), stock.enhance_batch(wav, lengths=torch.ones(1))
    assert a.shape == wav.shape and torch.isfinite(a).all() and a.abs().max() > 0
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    c2n = PaperGenerator(mode="map")
    c2n.load_state_dict(torch.load(folder / "gen_c2n.ckpt", weights_only=True))
    disc = MultiScaleDiscriminator.from_preset("paper", n_scales=1)
    disc.load_state_dict(torch.load(folder / "disc_noisy.ckpt", weights_only=True))


def test_import_of_a_bare_generator_state_dict(tmp_path):
    full = torch.load(reference_checkpoint(tmp_path / "full.pth", prefix=""), weights_only=False)
    torch.save(full["G_A2B"], tmp_path / "g.pth")
    assert cli_main(["import-reference", str(tmp_path / "g.pth"), "--out", str(tmp_path / "m")]) == 0
    assert sorted(p.name for p in (tmp_path / "m").glob("*.ckpt")) == ["generator.ckpt"]


def one_line_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_import_errors_are_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "model")]
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert "not a PyTorch checkpoint" in one_line_error(capsys, ["import-reference", str(tmp_path / "notes.txt"), *out])
    bad = reference_checkpoint(tmp_path / "missing.pth")
    ckpt = torch.load(bad, weights_only=False)
    del ckpt["G_A2B"]["module.d2.res.conv_1.real_conv.weight"]
    torch.save(ckpt, bad)
    err = one_line_error(capsys, ["import-reference", str(bad), *out])
    assert "missing key 'd2.res.conv_1.real_conv.weight'" in err
    ckpt["G_A2B"]["module.d2.res.conv_1.real_conv.weight"] = torch.zeros(16, 16, 3, 3)
    torch.save(ckpt, bad)
    err = one_line_error(capsys, ["import-reference", str(bad), *out])
    assert "'d2.res.conv_1.real_conv.weight' has shape (16, 16, 3, 3), expected (16, 16, 5, 7)" in err
    torch.save(UpCycleGenerator.from_preset("small").state_dict(), tmp_path / "ours.pth")
    assert "not the authors' Up-Cycle-SENet generator" in one_line_error(
        capsys, ["import-reference", str(tmp_path / "ours.pth"), *out])
    torch.save({"G_A2B": torch.nn.Identity()}, tmp_path / "code.pth")  # a pickled module: loading runs code
    assert "refused" in one_line_error(capsys, ["import-reference", str(tmp_path / "code.pth"), *out])
    assert not (tmp_path / "model").exists()  # nothing half-written


def test_import_refuses_an_existing_folder_without_overwrite(tmp_path, capsys):
    ckpt = reference_checkpoint(tmp_path / "c.pth", prefix="")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("mine")
    assert "already exists (use --overwrite" in one_line_error(
        capsys, ["import-reference", str(ckpt), "--out", str(tmp_path / "model")])
    assert (tmp_path / "model" / "keep.txt").read_text() == "mine"
    assert cli_main(["import-reference", str(ckpt), "--out", str(tmp_path / "model"), "--overwrite"]) == 0
    assert not (tmp_path / "model" / "keep.txt").exists() and (tmp_path / "model" / "generator.ckpt").is_file()


def test_init_from_an_imported_folder_starts_all_four_networks(imported, tmp_path):
    from upcycle_se.recipe import init_generator

    _, folder = imported
    hp = load_hparams(str(ROOT / "recipes" / "VoiceBankDEMAND" / "hparams" / "upcycle.yaml"),
                      {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out"), "init_from": str(folder)})
    init_generator(hp["pretrainer"], str(folder), hp["generator_preset"], modules=hp["modules"])
    for name, file in (("gen_n2c", "generator.ckpt"), ("gen_c2n", "gen_c2n.ckpt"), ("disc_noisy", "disc_noisy.ckpt"),
                       ("disc_clean", "disc_clean.ckpt")):
        saved = torch.load(folder / file, weights_only=True)
        state = hp["modules"][name].state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items()), name
