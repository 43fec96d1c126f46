"""`upcycle-se enhance` and `upcycle-se export`: outputs, skip/overwrite, atomic writes, one-line errors."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from upcycle_se.cli import main
from upcycle_se.errors import UserError

CONSOLE_SCRIPT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "upcycle-se"


def tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    sig = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    return np.repeat(sig[:, None], channels, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(exported_small_model) -> Path:
    """The shared exported random small model (see conftest)."""
    return exported_small_model


@pytest.fixture
def noisy(tmp_path) -> Path:
    """``noisy/``: a.wav (16 kHz mono int16), sub/b.flac (44.1 kHz stereo), sub/deeper/c.wav (8 kHz float),
    plus files that are not inputs: notes.txt and a hidden leftover .part."""
    root = tmp_path / "noisy"
    (root / "sub" / "deeper").mkdir(parents=True)
    sf.write(root / "a.wav", tone(0.4, 16000), 16000, subtype="PCM_16")
    sf.write(root / "sub" / "b.flac", tone(0.3, 44100, 2), 44100, subtype="PCM_16")
    sf.write(root / "sub" / "deeper" / "c.wav", tone(0.25, 8000), 8000, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio")
    (root / "sub" / ".b.x1y2.part").write_bytes(b"half a file")
    return root


def enhance(*args: str) -> int:
    return main(["enhance", *map(str, args)])


def error_lines(err: str) -> list:
    return [line for line in err.splitlines() if line.strip()]


def test_folder_is_enhanced_recursively_keeping_rate_channels_length(noisy, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(noisy, "-o", out, "--model", model_dir, "--batch-size", "2", "--chunk-seconds", "0.2",
                   "--overlap-seconds", "0.05") == 0
    captured = capsys.readouterr()
    assert "3 done, 0 skipped, 0 failed" in captured.out and captured.err == ""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == ["a.wav", "sub", "sub/b.flac", "sub/deeper", "sub/deeper/c.wav"]
    for rel in ("a.wav", "sub/b.flac", "sub/deeper/c.wav"):
        a, b = sf.info(noisy / rel), sf.info(out / rel)
        assert (b.samplerate, b.channels, b.frames, b.format, b.subtype) == \
               (a.samplerate, a.channels, a.frames, a.format, a.subtype)


def test_skip_existing_overwrite_and_leftover_part_files(noisy, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / ".a.k3j4h5.part").write_bytes(b"RIFF half-written by a killed run")  # not an output
    assert enhance(noisy / "a.wav", noisy / "sub", "-o", out, "--model", model_dir) == 0
    assert "3 done, 0 skipped" in capsys.readouterr().out  # a.wav, sub/b.flac, sub/deeper/c.wav
    inode = (out / "a.wav").stat().st_ino
    assert enhance(noisy / "a.wav", noisy / "sub", "-o", out, "--model", model_dir) == 0
    assert "0 done, 3 skipped (output exists" in capsys.readouterr().out
    assert (out / "a.wav").stat().st_ino == inode
    assert enhance(noisy / "a.wav", "-o", out, "--model", model_dir, "--overwrite") == 0
    assert "1 done, 0 skipped" in capsys.readouterr().out
    assert (out / "a.wav").stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".part")) == [".a.k3j4h5.part"]


def test_nothing_to_do_needs_no_model(noisy, tmp_path, capsys, monkeypatch):
    import upcycle_se.inference as inference

    out = tmp_path / "out"
    out.mkdir()
    sf.write(out / "a.wav", tone(0.1, 16000), 16000)
    monkeypatch.setattr(inference, "packaged_model_dir", lambda name="default": tmp_path / "no_model")
    assert enhance(noisy / "a.wav", "-o", out) == 0  # skipped: the missing model is never needed
    assert "0 done, 1 skipped" in capsys.readouterr().out


def test_missing_packaged_model_is_one_clear_line(noisy, tmp_path, capsys, monkeypatch):
    import upcycle_se.inference as inference

    monkeypatch.setattr(inference, "packaged_model_dir", lambda name="default": tmp_path / "pretrained" / name)
    assert enhance(noisy / "a.wav", "-o", tmp_path / "out") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "packaged model 'default' is missing" in lines[0] and "upcycle-se export" in lines[0]


def test_packaged_models_are_chosen_by_name_and_a_folder_of_that_name_wins(noisy, tmp_path, monkeypatch):
    from upcycle_se.cli.enhance import load_enhancer
    from upcycle_se.inference import PACKAGED_MODELS, packaged_model_dir

    assert {"default", "unpaired"} <= set(PACKAGED_MODELS)
    for name in PACKAGED_MODELS:
        enh = load_enhancer(name, "cpu", "fp32")
        assert enh.mods.enhance_model.generator.training is False
        assert packaged_model_dir(name).parent.name == "pretrained"
    # an exported folder that happens to be called like a packaged model is the user's, not ours
    mine = tmp_path / "work"
    mine.mkdir()
    monkeypatch.chdir(mine)
    (mine / "unpaired").mkdir()
    with pytest.raises(UserError, match="unpaired"):  # an empty folder: the folder was tried, not the package
        load_enhancer("unpaired", "cpu", "fp32")
    with pytest.raises(UserError, match="unknown packaged model 'best'; packaged: default, unpaired, small"):
        packaged_model_dir("best")


def test_unknown_packaged_model_name_is_one_line(noisy, tmp_path, capsys):
    assert enhance(noisy / "a.wav", "-o", tmp_path / "out", "--model", "nosuchmodel") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "nosuchmodel" in lines[0]


@pytest.mark.parametrize("case", ["missing file", "zero-byte file", "empty audio", "corrupt header",
                                  "folder without audio", "missing model folder"])
def test_bad_input_gives_one_error_line_and_nonzero_exit(case, model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    model = model_dir
    if case == "zero-byte file":
        bad.write_bytes(b"")
    elif case == "empty audio":
        sf.write(bad, np.zeros(0, np.float32), 16000)
    elif case == "corrupt header":
        bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    elif case == "folder without audio":
        bad = tmp_path / "docs"
        bad.mkdir()
        (bad / "readme.txt").write_text("no audio here")
    elif case == "missing model folder":
        sf.write(bad, tone(0.1, 16000), 16000)
        model = tmp_path / "no_such_model"
    code = enhance(bad, "-o", tmp_path / "out", "--model", model)
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("upcycle-se enhance:"), captured.err
    assert (str(model) if case == "missing model folder" else str(bad)) in lines[0]
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]  # nothing half-written


def test_a_bad_file_is_counted_and_the_run_goes_on(noisy, model_dir, tmp_path, capsys):
    (noisy / "sub" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    out = tmp_path / "out"
    assert enhance(noisy, tmp_path / "missing.flac", "-o", out, "--model", model_dir) == 1
    captured = capsys.readouterr()
    assert "3 done, 0 skipped, 2 failed" in captured.out
    lines = error_lines(captured.err)
    assert len(lines) == 2 and any("missing.flac: no such file" in x for x in lines)
    assert any("broken.wav: cannot be read as audio" in x for x in lines)
    assert sorted(p.name for p in out.rglob("*.*")) == ["a.wav", "b.flac", "c.wav"]


def test_downmix_and_output_guards(noisy, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(noisy / "sub" / "b.flac", "-o", out, "--model", model_dir, "--channels", "downmix") == 0
    assert sf.info(out / "b.flac").channels == 1
    capsys.readouterr()
    # Writing into the input folder would replace the inputs: refused, nothing written.
    assert enhance(noisy / "a.wav", "-o", noisy, "--model", model_dir) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    # OUTDIR inside an input folder: earlier outputs are not picked up as inputs on a rerun.
    inside = noisy / "enhanced"
    assert enhance(noisy, "-o", inside, "--model", model_dir) == 0
    assert "3 done" in capsys.readouterr().out
    assert enhance(noisy, "-o", inside, "--model", model_dir) == 0
    assert "0 done, 3 skipped" in capsys.readouterr().out
    # Two inputs with the same output name: the second is reported, not silently dropped.
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "a.wav", tone(0.1, 16000), 16000)
    assert enhance(noisy / "a.wav", other / "a.wav", "-o", tmp_path / "o2", "--model", model_dir) == 1
    assert "same output name" in capsys.readouterr().err


def test_bad_chunking_is_one_error_not_one_per_file(noisy, model_dir, tmp_path, capsys):
    assert enhance(noisy, "-o", tmp_path / "out", "--model", model_dir, "--chunk-seconds", "1",
                   "--overlap-seconds", "0.6") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "at most half a chunk" in lines[0]


def test_bad_precision_is_one_error_line_before_any_work(noisy, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(noisy, "-o", out, "--model", model_dir, "--precision", "fp16") == 2
    lines = error_lines(capsys.readouterr().err)
    assert lines == ["upcycle-se enhance: error: precision must be one of auto, fp32, bf16, got 'fp16'"]
    assert not out.exists()


def test_precision_fp32_and_bf16_enhance_alike(noisy, model_dir, tmp_path, capsys):
    """Both precisions write the same files; bf16 differs from fp32 only by rounding (>= 35 dB SNR)."""
    outs = {}
    for precision in ("fp32", "bf16"):
        outs[precision] = tmp_path / precision
        assert enhance(noisy / "a.wav", "-o", outs[precision], "--model", model_dir, "--precision", precision) == 0
        assert "1 done" in capsys.readouterr().out
    ref, low = (sf.read(outs[p] / "a.wav", dtype="float64")[0] for p in ("fp32", "bf16"))
    assert ref.shape == low.shape
    assert 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - low) ** 2), 1e-30)) >= 35.0


def test_compile_flag_asks_speechbrain_to_compile_the_model(noisy, model_dir, tmp_path, monkeypatch):
    from upcycle_se.inference import UpCycleEnhancement

    seen, real = [], UpCycleEnhancement.from_hparams

    def spy(*args, **kwargs):
        seen.append(dict(kwargs["run_opts"]))
        return real(*args, **{**kwargs, "run_opts": {k: v for k, v in kwargs["run_opts"].items() if k != "compile"}})

    monkeypatch.setattr(UpCycleEnhancement, "from_hparams", spy)
    assert enhance(noisy / "a.wav", "-o", tmp_path / "c", "--model", model_dir, "--compile") == 0
    assert enhance(noisy / "a.wav", "-o", tmp_path / "e", "--model", model_dir) == 0
    assert seen == [{"device": "cpu", "precision": "auto", "compile": True}, {"device": "cpu", "precision": "auto"}]


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    (tmp_path / "run" / "save").mkdir(parents=True)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 2 and "no such folder" in lines[0] and "no checkpoint found" in lines[1]
    assert not (tmp_path / "m").exists()


def test_export_cli_refuses_a_bad_attenuation_limit_in_one_line(tmp_path, capsys):
    (tmp_path / "run" / "save").mkdir(parents=True)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "m"),
                 "--max-attenuation-db", "loud"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "max_attenuation_db must be a finite number" in lines[0] and "'loud'" in lines[0]
    assert not (tmp_path / "m").exists()


def test_console_script(noisy, model_dir, tmp_path):
    (noisy / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = tmp_path / "out"
    res = subprocess.run([str(CONSOLE_SCRIPT), "enhance", str(noisy / "a.wav"), str(noisy / "corrupt.wav"),
                          "-o", str(out), "--model", str(model_dir)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 1
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "corrupt.wav: cannot be read as audio" in lines[0], res.stderr
    assert "1 done, 0 skipped, 1 failed" in res.stdout
    assert sf.info(out / "a.wav").frames == sf.info(noisy / "a.wav").frames


def png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_spectrogram_beside_each_output_and_for_skipped_ones(noisy, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(noisy / "a.wav", noisy / "sub", "-o", out, "--model", model_dir) == 0
    assert not list(out.rglob("*.png"))
    (out / "b.flac").unlink()  # redone now; a.wav and deeper/c.wav are skipped but get their figure
    assert enhance(noisy / "a.wav", noisy / "sub", "-o", out, "--model", model_dir, "--spectrogram") == 0
    captured = capsys.readouterr()
    assert "1 done, 2 skipped" in captured.out and "3 spectrogram(s)" in captured.out and captured.err == ""
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["a.wav.png", "b.flac.png", "deeper/c.wav.png"]
    for png in pngs:
        assert png_size(out / png) == (1000, 500)  # two panels: noisy, enhanced
    assert enhance(noisy / "a.wav", "-o", out, "--spectrogram") == 0  # nothing new to draw
    assert "0 spectrogram(s)" in capsys.readouterr().out


def make_save_folder(root: Path, seed: int = 0) -> Path:
    """A recipe save folder holding one checkpoint of a random small generator."""
    import json

    import torch
    from speechbrain.utils.checkpoints import Checkpointer

    from upcycle_se.models import UpCycleGenerator

    torch.manual_seed(seed)
    gen = UpCycleGenerator.from_preset("small")
    Checkpointer(root / "save", {"gen_n2c": gen}).save_checkpoint(meta={"pesq": 1.0})
    (root / "save" / "model_config.json").write_text(json.dumps({"gen_n2c": gen.config, "sample_rate": 16000}))
    return root / "save"


@pytest.mark.slow
def test_export_onnx_writes_a_graph_that_enhances_like_pytorch(tmp_path, capsys):
    import onnxruntime as ort
    import torch

    from upcycle_se.inference import UpCycleEnhancement

    save = make_save_folder(tmp_path / "run")
    assert main(["export", "--checkpoint", str(save), "--out", str(tmp_path / "m"), "--onnx"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"upcycle-se export: {tmp_path / 'm' / 'generator.onnx'} matches PyTorch within ")
    assert float(line.split("within ")[1].split()[0]) < 1e-5  # measured ~1e-7
    session = ort.InferenceSession(str(tmp_path / "m" / "generator.onnx"), providers=["CPUExecutionProvider"])
    wav = torch.from_numpy(tone(0.7, 16000)[:, 0])[None]
    (onnx_out,) = session.run(None, {"wav": wav.numpy()})
    # fp32: the ONNX graph is fp32, while "auto" would pick bf16 on a CPU with bf16 hardware
    eager = UpCycleEnhancement.from_hparams(source=tmp_path / "m", run_opts={"precision": "fp32"}).enhance_batch(wav)
    np.testing.assert_allclose(onnx_out, eager.numpy(), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_export_onnx_that_disagrees_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import upcycle_se.export as export
    from upcycle_se.models import UpCycleGenerator

    save = make_save_folder(tmp_path / "run")
    real = export.export_onnx
    monkeypatch.setattr(export, "export_onnx",  # a graph of another generator
                        lambda generator, path: real(UpCycleGenerator.from_preset("small"), path))
    assert main(["export", "--checkpoint", str(save), "--out", str(tmp_path / "m"), "--onnx"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "generator.onnx: onnxruntime's output differs from PyTorch's by up to" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left behind


def test_export_onnx_without_onnxruntime_says_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert main(["export", "--checkpoint", str(tmp_path / "any"), "--out", str(tmp_path / "m"), "--onnx"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "onnxruntime is missing" in lines[0] and "pip install onnx onnxruntime" in lines[0]
