"""The shipped models (default, unpaired, small) give the outputs pinned in ``data/shipped_outputs.npz``.

A refactor must not change what a user gets. The tolerance is 1e-5 of each output's peak rather than bit
equality, because oneDNN picks different kernels on different CPUs; on one machine the outputs are
bit-identical run to run. Regenerate the file with ``tests/data/make_shipped_outputs.py`` only when a
change of outputs is intended.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
REL_TOL = 1e-5  # of the output's peak


def _maker():
    spec = importlib.util.spec_from_file_location("make_shipped_outputs", DATA / "make_shipped_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()


@pytest.fixture(scope="module")
def expected() -> dict:
    with np.load(MAKER.OUT) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("model", MAKER.MODELS)
def test_shipped_model_outputs_match_the_pinned_ones(model, expected):
    enhancer = MAKER.load(model)
    for seed, (case, seconds, rate, chunk, overlap) in enumerate(MAKER.CASES):
        key = f"{model}/{case}"
        noisy = MAKER.make_input(seconds, rate, seed)
        got = MAKER.summarize(enhancer.enhance_signal(noisy, rate, chunk_seconds=chunk, overlap_seconds=overlap))
        want = expected[f"{key}/samples"]
        assert int(got["length"]) == int(expected[f"{key}/length"]), key
        peak = float(np.abs(want).max())
        assert peak > 0, key
        tol = REL_TOL * peak
        err = float(np.abs(got["samples"].astype(np.float64) - want).max())
        assert err <= tol, f"{key}: max |difference| {err:.3g} > {tol:.3g} on every {MAKER.STRIDE}th sample"
        # Sum and energy see every sample, with the bounds a per-sample error of `tol` allows.
        n = int(got["length"])
        assert abs(got["sum"] - expected[f"{key}/sum"]) <= tol * n, f"{key}: sum changed"
        assert abs(got["energy"] - expected[f"{key}/energy"]) <= 2 * tol * peak * n * 1.01, f"{key}: energy changed"
