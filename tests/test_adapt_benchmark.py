"""benchmarks/adapt_conditions.py: the adaptation benchmark's noise conditions are deterministic, of the
asked length, finite, unit power, and spectrally distinct from each other; benchmarks/adapt.py's statistics."""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import adapt_conditions as C  # noqa: E402

SR = 16000
needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def pool():
    """Three espeak-ng talker utterances (the benchmark's call-centre talkers are Piper and espeak-ng)."""
    from upcycle_se.corpus.build import babble_utterance, seeded_rng
    from upcycle_se.corpus.speech import base_voices

    if shutil.which("espeak-ng") is None or shutil.which("flite") is None:
        pytest.skip("needs flite and espeak-ng")
    _, test_pool = base_voices()
    voices = [v for v in test_pool if v.engine == "espeak-ng"][-3:]
    return [babble_utterance(v, seeded_rng(0, 99, j), SR) for j, v in enumerate(voices)]


def _noise(name, n, seed, pool, scene=None):
    return C.make_condition_noise(name, n, SR, np.random.default_rng(seed), scene=scene, pool=pool)


@needs_tts
@pytest.mark.parametrize("name", C.CONDITION_NAMES)
def test_generator_is_deterministic_finite_unit_power_and_of_the_asked_length(name, pool):
    for n in (4 * SR, 12345):
        a, b = _noise(name, n, 7, pool), _noise(name, n, 7, pool)
        assert a.shape == (n,) and a.dtype == np.float64
        assert np.array_equal(a, b)  # same rng seed and scene: the same samples
        assert np.all(np.isfinite(a))
        assert np.mean(a ** 2) == pytest.approx(1.0, rel=1e-6) and abs(a.mean()) < 1e-9
        # not silent anywhere for long: every 0.25 s stretch carries noise
        q = SR // 4
        frames = (a[: n // q * q].reshape(-1, q) ** 2).mean(axis=1)
        assert frames.min() > 1e-4
    other = _noise(name, 4 * SR, 8, pool)
    assert not np.allclose(other, _noise(name, 4 * SR, 7, pool))  # another stretch of the scene
    # the scene is drawn from its seed: same seed, same scene; another seed, another factory / office / car
    scene = C.CONDITIONS[name].scene
    assert scene(3) == scene(3) and scene(3) != scene(4)
    assert not np.allclose(_noise(name, SR, 7, pool, scene(4)), _noise(name, SR, 7, pool, scene(3)))


@needs_tts
def test_conditions_are_spectrally_distinct(pool):
    """Vehicle noise is low-frequency rumble, call-centre noise sits in the speech band, factory noise rings
    high: their spectral centroids are ordered and far apart, over several stretches of each scene."""
    cent = {name: [C.spectral_centroid(_noise(name, 3 * SR, s, pool), SR) for s in range(3)]
            for name in C.CONDITION_NAMES}
    assert max(cent["vehicle"]) < 400.0
    assert 1.5 * max(cent["vehicle"]) < min(cent["callcentre"])
    assert 1.5 * max(cent["callcentre"]) < min(cent["factory"])
    # and each scene is consistent across its stretches (one environment, not a random family)
    for name, values in cent.items():
        assert max(values) / min(values) < 1.25, (name, values)


def _envelope(x, hop=160):
    m = len(x) // hop
    return np.log10((x[: m * hop].reshape(m, hop) ** 2).mean(axis=1) + 1e-12)


@needs_tts
def test_factory_strikes_at_its_press_cycle_and_the_car_is_steadier(pool):
    scene = C.factory_scene(0)
    env = _envelope(_noise("factory", 8 * SR, 1, pool, scene))
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1:] / (env ** 2).sum()
    lag = int(round(scene["period_s"] * 100))  # envelope frames are 10 ms
    assert ac[lag - 2: lag + 3].max() > 0.3  # a strong periodicity at the press cycle...
    assert ac[lag // 2] < ac[lag - 2: lag + 3].max() - 0.15  # ...not at half of it
    # the car's short-time level varies less than the factory's strikes and the typing/talk of the call centre
    spread = {name: float(np.std(_envelope(_noise(name, 8 * SR, 1, pool)))) for name in C.CONDITION_NAMES}
    assert spread["vehicle"] < spread["factory"] and spread["vehicle"] < spread["callcentre"]


@needs_tts
def test_callcentre_takes_one_utterance_list_per_colleague(pool):
    nested = _noise("callcentre", 2 * SR, 3, [pool[:1], pool[1:]])
    assert nested.shape == (2 * SR,) and np.all(np.isfinite(nested)) and np.mean(nested ** 2) == pytest.approx(1.0)
    assert np.array_equal(nested, _noise("callcentre", 2 * SR, 3, [pool[:1], pool[1:]]))
    assert not np.allclose(nested, _noise("callcentre", 2 * SR, 3, pool))


def test_callcentre_needs_its_talkers_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="pool"):
        C.callcentre(SR, SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown condition"):
        C.make_condition_noise("tunnel", SR, SR, np.random.default_rng(0))


def test_summaries_and_paired_differences():
    from benchmarks import adapt as A

    rng = np.random.default_rng(0)
    start = {f"f{i}": {"pesq": 2.0 + rng.normal(0, 0.3), "stoi": 0.9 + rng.normal(0, 0.02), "covl": 2.5}
             for i in range(12)}
    adapted = {f: {"pesq": r["pesq"] + 0.2, "stoi": r["stoi"] - 0.01, "covl": r["covl"] + 0.1}
               for f, r in start.items()}
    d = A.paired(adapted, start, "pesq")
    assert d["mean"] == pytest.approx(0.2) and d["ci"] == pytest.approx(0.0, abs=1e-9) and d["n"] == 12
    v = A.target_verdict({"pesq": A.paired(adapted, start, "pesq"), "stoi": A.paired(adapted, start, "stoi")})
    assert v["met"] is False and "STOI" in v["text"]  # +0.2 PESQ, but STOI lower
    assert math.isnan(A.paired({}, start, "pesq")["mean"])
