"""The built wheel works on its own: `pip install .` (not editable), then export, enhance and demo from a
folder outside the source tree."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.utils.checkpoints import Checkpointer

from upcycle_se.models import UpCycleGenerator

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.mark.slow
def test_wheel_installs_and_runs_export_enhance_demo_from_elsewhere(tmp_path):
    # Build from a copy of what the wheel is made of, so the build never writes into the working tree.
    src = tmp_path / "src"
    shutil.copytree(REPO / "upcycle_se", src / "upcycle_se", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src], tmp_path, dict(os.environ))
    (wheel,) = (tmp_path / "dist").glob("upcycle_se-*.whl")
    # The wheel carries the named models only; the benchmarks' starting points stay in benchmarks/starts/.
    from upcycle_se.inference import PACKAGED_MODELS

    with zipfile.ZipFile(wheel) as whl:
        folders = {Path(n).parts[2] for n in whl.namelist() if n.startswith("upcycle_se/pretrained/")}
    assert folders == set(PACKAGED_MODELS.values()), folders
    site = tmp_path / "site"
    run([*pip, "install", "--no-deps", "--target", site, wheel], tmp_path, dict(os.environ))
    shutil.rmtree(src)  # nothing may come from the source copy

    # The venv provides the dependencies; PYTHONPATH puts the installed wheel before the editable checkout.
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([sys.executable, "-c", "import upcycle_se; print(upcycle_se.__file__)"], elsewhere, env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout

    # A fake recipe run holding a random small generator.
    save = elsewhere / "run" / "save"
    torch.manual_seed(0)
    generator = UpCycleGenerator.from_preset("small")
    Checkpointer(save, {"gen_n2c": generator}).save_checkpoint(meta={"pesq": 1.0})
    (save / "model_config.json").write_text(json.dumps({"gen_n2c": generator.config, "sample_rate": 16000}))
    t = np.arange(8000) / 16000
    sf.write(elsewhere / "noisy.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)

    # export (the packaged template), then enhance with the exported and with the packaged model: the
    # CLI's commands in one process, since each start imports torch and SpeechBrain (~6 s here).
    commands = [["export", "--checkpoint", "run", "--out", "model"],
                ["enhance", "noisy.wav", "-o", "out_exported", "--model", "model", "--spectrogram"],
                ["enhance", "noisy.wav", "-o", "out_packaged", "--spectrogram"]]
    res = run([sys.executable, "-c", f"import sys; from upcycle_se.cli import main; "
                                     f"sys.exit(max(main(argv) for argv in {commands!r}))"], elsewhere, env)
    assert "-> " + str(elsewhere / "model") in res.stdout
    assert "enhance_model: !new:upcycle_se.inference.EnhanceModel" in (elsewhere / "model" / "hyperparams.yaml").read_text()
    assert res.stdout.count("1 done, 0 skipped, 0 failed") == 2, res.stdout
    for out in ("out_exported", "out_packaged"):
        assert sf.info(elsewhere / out / "noisy.wav").frames == 8000
        assert (elsewhere / out / "noisy.wav.png").stat().st_size > 10_000

    # The console script the wheel installs.
    res = run([site / "bin" / "upcycle-se", "demo", "--help"], elsewhere, env)
    assert "usage: upcycle-se demo" in res.stdout
