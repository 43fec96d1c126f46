"""Shared pytest fixtures: tiny synthetic corpora in the VoiceBank-DEMAND layout, built once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Tests share a couple of CPU cores with other jobs: more intra-op threads only add contention.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

#: Sizes of the 48 kHz fixture (smaller than the "tiny" preset: it only checks rates and names).
TINY_48K = dict(n_train_speakers=2, n_test_speakers=1, utts_per_speaker=3, test_utts_per_speaker=2)


def _forget_unloadable_modules() -> None:
    """Drops lazy placeholder modules that raise ImportError when touched.

    SpeechBrain registers lazy modules for optional integrations (k2, spacy, ...); hypothesis scans
    ``sys.modules`` and touching one of those crashes the whole session with an INTERNALERROR.
    """
    for name, mod in list(sys.modules.items()):
        try:
            getattr(mod, "__file__", None)
        except ImportError:
            del sys.modules[name]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    _forget_unloadable_modules()


@pytest.fixture(autouse=True)
def _no_unloadable_modules():
    _forget_unloadable_modules()
    yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")


def _build(root: Path, build, **kwargs) -> Path:
    from upcycle_se.corpus.speech import require_tools
    from upcycle_se.errors import UserError

    try:  # without the synthesizers (another OS) the corpus tests skip with the install hint
        require_tools()
    except UserError as err:
        pytest.skip(str(err))
    build(root, **kwargs)
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 16 kHz corpus (preset "tiny": 4 train x 5, 2 test x 3 files) with ``vb`` folder names."""
    from upcycle_se.corpus.build import build_preset

    return _build(tmp_path_factory.mktemp("tiny_corpus"), build_preset, preset="tiny", sample_rate=16000,
                  naming="vb", seed=0)


@pytest.fixture(scope="session")
def tiny_corpus_48k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 48 kHz corpus with the distributed names (``clean_trainset_28spk_wav/``, ...)."""
    from upcycle_se.corpus.build import build_corpus

    return _build(tmp_path_factory.mktemp("tiny_corpus_48k"), build_corpus, **TINY_48K, sample_rate=48000,
                  naming="28spk", seed=0)


@pytest.fixture(scope="session")
def exported_small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder made by ``upcycle-se export`` from a fake recipe save folder (random small generator)."""
    import json

    from speechbrain.utils.checkpoints import Checkpointer

    from upcycle_se.cli import main
    from upcycle_se.models import UpCycleGenerator

    root = tmp_path_factory.mktemp("recipe")
    torch.manual_seed(0)
    gen = UpCycleGenerator.from_preset("small")
    Checkpointer(root / "save", {"gen_n2c": gen}).save_checkpoint(meta={"pesq": 1.7})
    (root / "save" / "model_config.json").write_text(json.dumps({"gen_n2c": gen.config, "sample_rate": 16000}))
    out = tmp_path_factory.mktemp("models") / "small"
    assert main(["export", "--checkpoint", str(root / "save"), "--out", str(out)]) == 0
    return out
