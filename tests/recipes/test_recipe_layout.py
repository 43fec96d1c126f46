"""The recipes keep SpeechBrain's layout: every hparams key is used by the recipe's train.py or the Brain,
and run options the Brain cannot honour are refused with one line.

The key check follows the rule of SpeechBrain's recipe consistency test: a top-level key of the hparams file
must be referenced by another key (``<key>``), read by the scripts (``hparams["key"]``, ``hparams.key``,
``hparams.get("key"``, ``getattr(self.hparams, "key"``) or be one of SpeechBrain's run options.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest
from speechbrain.utils.run_opts import RunOptions

from upcycle_se.errors import ConfigError
from upcycle_se.recipe import load_hparams, validate_hparams

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "upcycle_se" / "brain.py"
#: The UnpairedFolders recipe's data code (shared with ``upcycle-se adapt``), which reads its data keys.
FOLDERS = REPO / "upcycle_se" / "data" / "folders.py"
RUN_OPTIONS = set(RunOptions().as_dict())
RECIPES = sorted(p.parent for p in (REPO / "recipes").glob("*/train.py"))
HPARAMS = [(recipe, yaml) for recipe in RECIPES for yaml in sorted((recipe / "hparams").glob("*.yaml"))]


def unused_keys(hparams_file: Path, scripts: Sequence[Path]) -> List[str]:
    """Top-level keys of ``hparams_file`` that nothing references, reads or treats as a run option."""
    text = hparams_file.read_text()
    keys = [k for k in re.findall(r"^([A-Za-z_]\w*):", text, re.M) if not k.startswith("__")]
    referenced = set(re.findall(r"<([A-Za-z_]\w*)(?:\[[^>]*\])?>", text))
    code = "\n".join(p.read_text() for p in scripts)

    def read(key: str) -> bool:
        patterns = (f'hparams["{key}"]', f"hparams.{key}", f'hparams.get("{key}"', f'attr(self.hparams, "{key}"')
        return any(p in code for p in patterns)

    return [k for k in keys if k not in referenced and k not in RUN_OPTIONS and not read(k)]


def test_recipes_found():
    assert {r.name for r in RECIPES} >= {"VoiceBankDEMAND", "UnpairedFolders"}
    assert len(HPARAMS) >= 5


@pytest.mark.parametrize("recipe, hparams_file", HPARAMS, ids=[f"{r.name}/{h.name}" for r, h in HPARAMS])
def test_every_hparams_key_is_used(recipe, hparams_file):
    assert unused_keys(hparams_file, [recipe / "train.py", BRAIN, FOLDERS]) == []


def test_every_adapt_hparams_key_is_used():
    """``upcycle-se adapt``'s packaged hparams follow the same rule (read by adapt.py, the Brain, the data)."""
    adapt_yaml = REPO / "upcycle_se" / "hparams" / "adapt.yaml"
    assert unused_keys(adapt_yaml, [REPO / "upcycle_se" / "adapt.py", BRAIN, FOLDERS]) == []


def test_the_key_check_finds_an_unused_key(tmp_path):
    recipe = REPO / "recipes" / "UnpairedFolders"
    extra = tmp_path / "extra.yaml"
    extra.write_text((recipe / "hparams" / "upcycle.yaml").read_text() + "\nforgotten_key: 3\n")
    assert unused_keys(extra, [recipe / "train.py", BRAIN, FOLDERS]) == ["forgotten_key"]
    # without the Brain, the keys only it reads (valid_metrics, lr_policy, ...) are unused
    assert {"valid_metrics", "lr_policy", "n_valid_examples"} <= set(unused_keys(extra, [recipe / "train.py"]))


def test_grad_accumulation_is_refused_in_hparams_and_run_options():
    good = {"lr": 2e-4, "batch_size": 4}
    validate_hparams({**good, "grad_accumulation_factor": 1}, {"grad_accumulation_factor": 1})
    for hparams, run_opts in (({**good, "grad_accumulation_factor": 4}, {}), (good, {"grad_accumulation_factor": 2})):
        with pytest.raises(ConfigError) as err:
            validate_hparams(hparams, run_opts)
        assert str(err.value).startswith("grad_accumulation_factor=") and "raise batch_size" in str(err.value)


@pytest.mark.parametrize("recipe", ["VoiceBankDEMAND", "UnpairedFolders"])
def test_grad_accumulation_on_the_command_line_is_one_line(recipe, tmp_path):
    """``--grad_accumulation_factor=2`` is a SpeechBrain run option: refused before any data is touched."""
    data = ([f"--data_folder={tmp_path}"] if recipe == "VoiceBankDEMAND"
            else [f"--noisy_folder={tmp_path}", f"--clean_folder={tmp_path}"])
    cmd = [sys.executable, "train.py", "hparams/upcycle_small.yaml", *data, f"--output_folder={tmp_path / 'out'}",
           "--grad_accumulation_factor=2", "--device=cpu"]
    run = subprocess.run(cmd, cwd=REPO / "recipes" / recipe, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: grad_accumulation_factor=2: not supported")
    # refused before the experiment folder is made (no train.py, hyperparams.yaml, log.txt archived there;
    # the empty save/ and tensorboard/ folders come from building the hparams' checkpointer and writer)
    assert not list((tmp_path / "out").glob("*.*")) and not list((tmp_path / "out").glob("save/*"))


@pytest.mark.parametrize("override, record", [
    ("c2n_mode: residual", "docs/experiments/unpaired.md"),
    ("remix_teacher: ema", "docs/experiments/unpaired.md"),
    ("gan_mode: hinge", "docs/experiments/README.md"),
])
@pytest.mark.parametrize("recipe, hparams_file", HPARAMS, ids=[f"{r.name}/{h.name}" for r, h in HPARAMS])
def test_a_removed_key_is_one_line_naming_its_record(recipe, hparams_file, override, record, tmp_path):
    """``--c2n_mode=residual`` and the like: one line that names the key, says it was removed and where its
    measurement is kept (instead of HyperPyYAML's "override not found")."""
    key = override.split(":")[0]
    assert key not in re.findall(r"^([A-Za-z_]\w*):", hparams_file.read_text(), re.M)
    with pytest.raises(ConfigError) as err:
        load_hparams(str(hparams_file), f"{override}\noutput_folder: {tmp_path}\n")
    message = str(err.value)
    assert message.startswith(f"{key} was removed: ") and record in message and "\n" not in message
    assert (REPO / record).is_file()


def test_a_removed_key_in_an_old_hparams_file_is_one_line(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("c2n_mode: map\nlr: 0.001\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: c2n_mode was removed: .*docs/experiments/unpaired\.md"):
        load_hparams(str(old), {})
