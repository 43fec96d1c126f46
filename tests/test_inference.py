"""UpCycleEnhancement and upcycle_se.export: offline loading, any-rate file round trips, chunked overlap-add, memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from upcycle_se.errors import ConfigError, UserError
from upcycle_se.export import export_model, render_hparams, template_path
from upcycle_se.inference import GENERATOR_FILE, HPARAMS_FILE, UpCycleEnhancement, plan_chunks
from upcycle_se.models import UpCycleGenerator

# Chunked (4 s chunks, 0.5 s cross-fade) vs whole-file output on 10 s of speech-like audio, measured:
# random small generator ~98 dB overall / ~96 dB worst 50 ms (16 and 44.1 kHz); the same with doubled
# weights (strongly context-dependent) 37.9 / 21.9 dB, and 32.5 / 8.9 dB with hard cuts instead of
# cross-fades. The bounds fail on misaligned chunks, wrong weights or seams.
MIN_CHUNKED_SNR_DB = 30.0
MIN_CHUNKED_LOCAL_SNR_DB = 20.0  # worst 50 ms segment


def make_recipe_output(root: Path) -> dict:
    """A fake recipe output folder, as UpCycleBrain leaves it: ``save/CKPT+*/{gen_n2c,...}.ckpt``,
    ``CKPT.yaml`` with ``pesq``, an intra-epoch checkpoint without it, and ``save/model_config.json``.
    Returns the generators' state_dicts by pesq (None: the intra-epoch one)."""
    from speechbrain.utils.checkpoints import Checkpointer

    save = root / "save"
    states = {}
    for seed, pesq in ((1, 1.5), (2, 2.1), (3, 1.8), (4, None)):
        torch.manual_seed(seed)
        gen = UpCycleGenerator.from_preset("small")
        disc = torch.nn.Linear(2, 2)  # other modules of the Brain: must not be exported
        ckpter = Checkpointer(save, {"gen_n2c": gen, "disc_clean": disc})
        if pesq is None:
            ckpter.save_checkpoint(end_of_epoch=False)
        else:
            ckpter.save_checkpoint(meta={"pesq": pesq, "stoi": 0.8, "epoch": seed})
        states[pesq] = {k: v.clone() for k, v in gen.state_dict().items()}
    (save / "model_config.json").write_text(json.dumps({"gen_n2c": gen.config, "sample_rate": 16000}))
    return states


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("recipe") / "results" / "1986"
    return root, make_recipe_output(root)


@pytest.fixture(scope="module")
def model_dir(recipe, tmp_path_factory) -> Path:
    return export_model(recipe[0], tmp_path_factory.mktemp("models") / "small").folder


@pytest.fixture(scope="module")
def enhancer(model_dir) -> UpCycleEnhancement:
    # fp32: these tests compare outputs to float tolerances; "auto" is bf16 on a CPU with bf16 hardware
    # (tests/test_precision.py covers that path and its own bounds)
    return UpCycleEnhancement.from_hparams(source=model_dir, run_opts={"device": "cpu", "precision": "fp32"})


def speech_like(seconds: float, sr: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Voiced-ish test signal ``[time, channels]``: gliding harmonics, 4 Hz syllable envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for c in range(channels):
        f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + c)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 150 < sr / 2)
        env = np.clip(np.sin(2 * np.pi * 4 * t + c), 0, None) ** 2
        out.append(0.2 * env * voiced + 0.02 * rng.standard_normal(t.size))
    return np.stack(out, axis=1).astype(np.float32)


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum().clamp_min(1e-20)))


# ------------------------------------------------------------------------------------------- export
def test_export_keeps_only_the_best_generator(recipe, model_dir):
    _, states = recipe
    assert sorted(os.listdir(model_dir)) == [GENERATOR_FILE, HPARAMS_FILE]
    exported = torch.load(model_dir / GENERATOR_FILE, weights_only=True)
    assert exported.keys() == states[2.1].keys()
    assert all(torch.equal(exported[k], states[2.1][k]) for k in exported)
    text = (model_dir / HPARAMS_FILE).read_text()
    assert "pesq = 2.1, best of 3" in text and "!new:upcycle_se.models.UpCycleGenerator" in text
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_from_hparams_is_offline_and_links_into_savedir(model_dir, tmp_path, monkeypatch):
    import huggingface_hub
    import speechbrain.utils.fetching as fetching

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(fetching.huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(fetching.urllib.request, "urlretrieve", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    savedir = tmp_path / "savedir"
    enh = UpCycleEnhancement.from_hparams(source=str(model_dir), savedir=savedir,
                                          run_opts={"device": "cpu", "precision": "fp32"})  # weights as stored
    for name in (HPARAMS_FILE, GENERATOR_FILE):
        assert (savedir / name).is_symlink() and (savedir / name).resolve() == (model_dir / name).resolve()
    reference = torch.load(model_dir / GENERATOR_FILE, weights_only=True)
    loaded = enh.mods.enhance_model.generator.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert not enh.mods.enhance_model.training
    out = enh.enhance_batch(torch.randn(3, 4000) * 0.1)
    assert out.shape == (3, 4000) and torch.isfinite(out).all()
    # A hub-like id that is no local folder is an error, not a download.
    with pytest.raises(UserError, match="no such model folder"):
        UpCycleEnhancement.from_hparams(source="speechbrain/metricgan-plus-voicebank")
    with pytest.raises(UserError, match="missing generator.ckpt"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / HPARAMS_FILE).write_text("sample_rate: 16000\n")
        UpCycleEnhancement.from_hparams(source=tmp_path / "half")


def test_strict_load_rejects_a_checkpoint_of_another_architecture(model_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / HPARAMS_FILE).write_text((model_dir / HPARAMS_FILE).read_text())
    torch.save(UpCycleGenerator.from_preset("small", encoder_channels=[8, 16]).state_dict(), bad / GENERATOR_FILE)
    with pytest.raises(ConfigError, match="does not fit the generator"):
        UpCycleEnhancement.from_hparams(source=bad)


def test_export_key_choice_and_hand_picked_checkpoint(recipe, tmp_path):
    root, states = recipe
    latest = export_model(root, tmp_path / "latest", ckpt_key="unixtime")  # the intra-epoch one
    exported = torch.load(latest.folder / GENERATOR_FILE, weights_only=True)
    assert latest.n_compared == 4 and all(torch.equal(exported[k], states[None][k]) for k in exported)
    low = sorted((root / "save").glob("CKPT+*"))[0]  # pesq 1.5, exported because named
    info = export_model(low, tmp_path / "low")
    assert info.n_compared == 0 and info.checkpoint.meta["pesq"] == 1.5
    exported = torch.load(info.folder / GENERATOR_FILE, weights_only=True)
    assert all(torch.equal(exported[k], states[1.5][k]) for k in exported)


def test_export_errors(recipe, tmp_path):
    root, _ = recipe
    with pytest.raises(UserError, match="no such folder"):
        export_model(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty" / "save").mkdir(parents=True)
    with pytest.raises(UserError, match="no checkpoint found"):
        export_model(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="no checkpoint records a numeric 'si_snr'.*pesq"):
        export_model(root, tmp_path / "out", ckpt_key="si_snr")
    no_config = tmp_path / "no_config"
    make_recipe_output(no_config)
    (no_config / "save" / "model_config.json").unlink()
    with pytest.raises(UserError, match="model_config.json: missing"):
        export_model(no_config, tmp_path / "out")
    with pytest.raises(UserError, match="must not contain the checkpoints"):
        export_model(root, root, overwrite=True)
    assert not (tmp_path / "out").exists()


def test_export_is_atomic(recipe, tmp_path, monkeypatch):
    import upcycle_se.export as export

    root, _ = recipe
    out = tmp_path / "model"
    export_model(root, out)
    with pytest.raises(UserError, match="already exists"):
        export_model(root, out)
    (out / "marker").write_text("old export")

    def interrupted(folder, sample_rate):
        assert sorted(os.listdir(folder)) == [GENERATOR_FILE, HPARAMS_FILE]  # built beside, not in, out
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "check_model_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(root, out, overwrite=True)
    assert (out / "marker").exists()  # the old export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # and no temp folder is left
    monkeypatch.undo()
    export_model(root, out, overwrite=True)
    assert sorted(os.listdir(out)) == [GENERATOR_FILE, HPARAMS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_render_hparams_writes_generator_kwargs():
    config = UpCycleGenerator.from_preset("small").config
    text = render_hparams(template_path().read_text(), config, 16000, ["from a test"])
    class AnyTag(yaml.SafeLoader):  # reads HyperPyYAML's !new: / !ref / !name: as plain nodes
        pass

    def plain(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) \
            else loader.construct_scalar(node)

    AnyTag.add_multi_constructor("!", plain)
    loaded = yaml.load(text, Loader=AnyTag)
    assert text.startswith("# from a test\n")
    assert loaded["generator"] == config and loaded["sample_rate"] == 16000
    with pytest.raises(ConfigError, match="bare"):
        render_hparams(text, config, 16000)  # the generator line already has kwargs


# --------------------------------------------------------------------------------------- file I/O
@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_enhance_file_keeps_rate_channels_length_subtype(enhancer, tmp_path, sr, channels, subtype):
    noisy = tmp_path / "noisy.wav"
    sig = speech_like(0.37, sr, channels=channels)
    sf.write(noisy, sig, sr, subtype=subtype)
    out = enhancer.enhance_file(noisy, output_filename=tmp_path / "out" / "enhanced.wav")
    info = sf.info(tmp_path / "out" / "enhanced.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (sr, channels, len(sig), subtype)
    assert out.shape == ((len(sig),) if channels == 1 else (channels, len(sig)))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    written, _ = sf.read(tmp_path / "out" / "enhanced.wav", dtype="float32", always_2d=True)
    tol = 1e-6 if subtype == "FLOAT" else 1 / 2 ** 15
    assert np.abs(written.T - out.reshape(channels, -1).clamp(-1, 1).numpy()).max() <= tol
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["enhanced.wav"]  # no .part left


def test_downmix_and_other_formats(enhancer, tmp_path):
    sig = speech_like(0.5, 22050, channels=3)
    sf.write(tmp_path / "in.flac", sig, 22050, subtype="PCM_24")
    mono = enhancer.enhance_file(tmp_path / "in.flac", tmp_path / "out.flac", channels="downmix")
    info = sf.info(tmp_path / "out.flac")
    assert mono.shape == (len(sig),)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 1, len(sig), "PCM_24")
    # Per-channel results are those of the channel alone (channels never mix in "each").
    both = enhancer.enhance_signal(torch.from_numpy(sig.T.copy()), 22050)
    alone = enhancer.enhance_signal(torch.from_numpy(sig[:, 1].copy()), 22050)
    assert torch.allclose(both[1], alone, atol=1e-5)
    # Output format follows the output name; a FLOAT input cannot stay FLOAT in FLAC.
    sf.write(tmp_path / "f.wav", sig[:, 0], 22050, subtype="FLOAT")
    enhancer.enhance_file(tmp_path / "f.wav", tmp_path / "f.flac")
    assert sf.info(tmp_path / "f.flac").format == "FLAC" and sf.info(tmp_path / "f.flac").frames == len(sig)


def test_tiny_and_odd_length_inputs(enhancer, tmp_path):
    for n, sr in ((1, 8000), (3, 44100), (441 * 37 + 5, 44100)):
        sf.write(tmp_path / "x.wav", np.full(n, 0.1, np.float32), sr)
        assert enhancer.enhance_file(tmp_path / "x.wav").shape == (n,)


def test_enhance_batch_lengths_do_not_leak_padding(enhancer):
    x = torch.randn(2, 8000) * 0.1
    alone = enhancer.enhance_batch(x[1:, :5000])
    padded = enhancer.enhance_batch(x, lengths=torch.tensor([1.0, 5000 / 8000]))
    assert torch.allclose(padded[1, :5000], alone[0], atol=1e-6) and padded[1, 5000:].abs().max() == 0
    assert torch.allclose(padded[0], enhancer.enhance_batch(x[:1])[0], atol=1e-6)


def test_bad_files_raise_one_line_audio_errors(enhancer, tmp_path):
    from upcycle_se.errors import AudioError

    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    for name, reason in (("missing.wav", "no such file"), ("zero.wav", "cannot be read"),
                         ("junk.wav", "cannot be read"), ("empty.wav", "empty audio"), ("nan.wav", "NaN")):
        with pytest.raises(AudioError, match=reason) as err:
            enhancer.enhance_file(tmp_path / name, tmp_path / "out" / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_failure_mid_stream_leaves_no_output(enhancer, tmp_path):
    from upcycle_se.errors import AudioError

    sig = speech_like(3.0, 16000)
    sig[int(2.9 * 16000)] = np.inf  # found only after several chunks have been written
    sf.write(tmp_path / "late_inf.wav", sig, 16000, subtype="FLOAT")
    (tmp_path / "out").mkdir()
    sf.write(tmp_path / "out" / "late_inf.wav", sig[:10], 16000)  # an earlier output stays as it was
    with pytest.raises(AudioError, match="NaN or infinite"):
        enhancer.enhance_to_file(tmp_path / "late_inf.wav", tmp_path / "out" / "late_inf.wav",
                                 chunk_seconds=0.5, overlap_seconds=0.1, batch_size=1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["late_inf.wav"]
    assert sf.info(tmp_path / "out" / "late_inf.wav").frames == 10


def test_load_audio_reads_any_file_as_model_input(enhancer, tmp_path):
    sf.write(tmp_path / "st.wav", speech_like(0.5, 44100, channels=2), 44100, subtype="PCM_24")
    wav = enhancer.load_audio(tmp_path / "st.wav")
    assert wav.shape == (8000,) and enhancer(wav[None]).shape == (1, 8000)


# -------------------------------------------------------------------------------------- chunking
def test_chunk_plan_covers_every_sample_with_weights_summing_to_one():
    for total, sr, chunk, overlap in ((16000 * 10 + 7, 16000, 4.0, 0.5), (44100 * 9, 44100, 1.0, 0.5),
                                      (50, 8000, 1.0, 0.1), (48000 * 3 + 1, 48000, 0.5, 0.0)):
        plan = plan_chunks(total, sr, chunk, overlap)
        wsum = torch.zeros(total)
        for k, start in enumerate(plan.starts):
            wsum[start: start + plan.length] += plan.window(k)
            assert plan.length == total or plan.length % (sr // np.gcd(sr, 16000)) == 0
        assert plan.starts[0] == 0 and plan.starts[-1] + plan.length == total
        assert wsum.min() > 0
        if plan.ramp:  # regular overlaps cross-fade to exactly 1 without normalising
            regular = wsum[: plan.starts[-1]]  # up to the last chunk, which may overlap more
            assert torch.allclose(regular, torch.ones_like(regular), atol=1e-6)
    assert plan_chunks(1000, 16000, 0, 0.5).starts == (0,)
    for bad in ((-1.0, 0.5), (4.0, -0.1), (1.0, 0.6), (float("nan"), 0.1)):
        with pytest.raises(ConfigError):
            plan_chunks(16000, 16000, *bad)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_overlap_add_is_transparent_with_an_identity_generator(sr):
    enh = UpCycleEnhancement(modules={"generator": torch.nn.Identity()},
                             hparams={"sample_rate": 16000}, run_opts={"device": "cpu"})
    sig = torch.from_numpy(speech_like(3.3, sr, channels=2).T.copy())
    whole = enh.enhance_signal(sig, sr, chunk_seconds=0)
    chunked = enh.enhance_signal(sig, sr, chunk_seconds=0.5, overlap_seconds=0.1, batch_size=3)
    if sr == 16000:
        assert torch.equal(whole, sig) and torch.allclose(chunked, sig, atol=1e-6)
    else:  # only resampling: the chunks' edge effects are under the cross-fades
        assert snr_db(whole, chunked) > 60


def chunked_vs_whole(enh: UpCycleEnhancement, sig: torch.Tensor, sr: int, whole=None, **chunking) -> tuple:
    """(overall SNR, worst 50 ms SNR) in dB of chunked against whole-signal enhancement ``whole``."""
    whole = enh.enhance_signal(sig, sr, chunk_seconds=0) if whole is None else whole
    chunked = enh.enhance_signal(sig, sr, **chunking)
    seg = int(0.05 * sr)
    local = [snr_db(whole[i: i + seg], chunked[i: i + seg]) for i in range(0, len(sig) - seg, seg)
             if whole[i: i + seg].pow(2).mean() > 1e-6]
    return snr_db(whole, chunked), min(local)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_chunked_matches_whole_file(enhancer, sr):
    sig = torch.from_numpy(speech_like(10.0, sr, seed=1)[:, 0].copy())
    overall, worst = chunked_vs_whole(enhancer, sig, sr, chunk_seconds=4.0, overlap_seconds=0.5)
    print(f"chunked vs whole at {sr} Hz: {overall:.1f} dB overall, worst 50 ms {worst:.1f} dB")
    assert overall > MIN_CHUNKED_SNR_DB and worst > MIN_CHUNKED_LOCAL_SNR_DB


def test_cross_fade_hides_seams_of_a_context_heavy_generator():
    """The random small generator is almost local (chunked == whole to ~90 dB); with its weights doubled
    its output depends strongly on context (incl. the ASPP's global pooling), so chunk borders show."""
    torch.manual_seed(2)
    gen = UpCycleGenerator.from_preset("small")
    with torch.no_grad():
        for p in gen.parameters():
            if p.dim() > 1:
                p.mul_(2.0)
    enh = UpCycleEnhancement(modules={"generator": gen}, hparams={"sample_rate": 16000}, run_opts={"device": "cpu"})
    sig = torch.from_numpy(speech_like(10.0, 16000, seed=1)[:, 0].copy())
    whole = enh.enhance_signal(sig, 16000, chunk_seconds=0)
    faded = chunked_vs_whole(enh, sig, 16000, whole, chunk_seconds=4.0, overlap_seconds=0.5)
    cut = chunked_vs_whole(enh, sig, 16000, whole, chunk_seconds=4.0, overlap_seconds=0.0)
    print(f"context-heavy generator, chunked vs whole: cross-faded {faded[0]:.1f} dB (worst 50 ms {faded[1]:.1f}), "
          f"hard cuts {cut[0]:.1f} dB (worst {cut[1]:.1f})")
    assert faded[0] > MIN_CHUNKED_SNR_DB and faded[1] > 15.0
    assert faded[1] > cut[1] + 6.0  # the measure sees seams: hard cuts are much worse locally


MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, soundfile as sf, torch
    from upcycle_se.inference import UpCycleEnhancement

    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    def write(path, seconds, sr, channels):  # in 1 s blocks: the script itself never holds the file
        block = (0.1 * np.random.default_rng(0).standard_normal((sr, channels))).astype(np.float32)
        with sf.SoundFile(path, "w", sr, channels, "PCM_16") as f:
            for _ in range(seconds):
                f.write(block)

    model, folder = sys.argv[1], sys.argv[2]
    for seconds in (20, 120):
        write(f"{folder}/b{seconds}.wav", seconds, 48000, 2)
    for seconds in (3, 12):
        write(f"{folder}/a{seconds}.wav", seconds, 16000, 1)
    # A: the streaming engine (identity generator: resampling and overlap-add only), default chunks.
    engine = UpCycleEnhancement(modules={"generator": torch.nn.Identity()}, hparams={"sample_rate": 16000},
                                run_opts={"device": "cpu"})
    for seconds in (20, 20, 120):  # the first run warms up allocator and resampler caches
        engine.enhance_to_file(f"{folder}/b{seconds}.wav", f"{folder}/out_b{seconds}.wav")
        print(hwm_mib())
    # B: the small generator's activations, 1 s chunks.
    enh = UpCycleEnhancement.from_hparams(source=model, run_opts={"device": "cpu"})
    for seconds in (3, 3, 12):
        enh.enhance_to_file(f"{folder}/a{seconds}.wav", f"{folder}/out_a{seconds}.wav",
                            chunk_seconds=float(sys.argv[3]), overlap_seconds=0.1, batch_size=2)
        print(hwm_mib())
""")


def test_memory_stays_flat_as_length_grows(model_dir, tmp_path):
    """Peak RSS (VmHWM) in a subprocess: (A) the streaming engine on 20 s then 120 s of 48 kHz stereo,
    where holding the longer file (in + out, float32) would add 88 MiB; (B) the small generator on 3 s
    then 12 s at 16 kHz, where running whole files would add hundreds of MiB. A fixed glibc mmap threshold
    makes RSS follow live buffers (with the default, heap fragmentation drifts RSS up by 10-30 MiB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(model_dir), str(tmp_path), "1.0"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    a20, a20_again, a120, b3, b3_again, b12 = (float(v) for v in res.stdout.split())
    print(f"VmHWM engine: {a20_again:.0f} MiB after 20 s, {a120:.0f} MiB after 120 s; "
          f"generator: {b3_again:.0f} MiB after 3 s, {b12:.0f} MiB after 12 s")
    assert sf.info(tmp_path / "out_b120.wav").frames == 120 * 48000
    assert a120 - a20_again < 16.0
    assert b12 - b3_again < 16.0


def test_export_bakes_an_attenuation_limit_into_the_folder(recipe, tmp_path):
    """``max_attenuation_db`` is written into the folder's hyperparams.yaml and applied when it loads (as the
    packaged default's 20 dB); a run option still overrides it; a bad value fails before anything is written."""
    root, _ = recipe
    plain = export_model(root, tmp_path / "plain").folder
    limited = export_model(root, tmp_path / "limited", max_attenuation_db="20").folder
    assert "max_attenuation_db: 20.0" in (limited / HPARAMS_FILE).read_text()
    assert "max_attenuation_db: null" in (plain / HPARAMS_FILE).read_text()
    assert UpCycleEnhancement.from_hparams(source=limited).max_attenuation_db == 20.0
    assert UpCycleEnhancement.from_hparams(source=plain).max_attenuation_db is None
    assert UpCycleEnhancement.from_hparams(source=limited, run_opts={"max_attenuation_db": 6}).max_attenuation_db == 6
    with pytest.raises(ConfigError, match="max_attenuation_db must be a finite number"):
        export_model(root, tmp_path / "bad", max_attenuation_db=-3)
    assert not (tmp_path / "bad").exists()
