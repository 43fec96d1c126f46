"""Tests of upcycle_se.metrics: PESQ/STOI wrappers, the Hu & Loizou composite measures, QualityStats.

Where a value is checked against something other than the code under test, the docstring says what:
the pesq/pystoi libraries themselves, a hand computation, a published example, or an independent
implementation's output recorded once offline.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import warnings

import numpy as np
import pesq as pesq_lib
import pystoi
import pytest
import torch
from speechbrain.utils.metric_stats import MetricStats

from upcycle_se.audio import read_audio, resample_audio
from upcycle_se.errors import AudioError
from upcycle_se.metrics import (
    MetricWarning,
    QualityStats,
    composite,
    composite_from_measures,
    llr,
    pesq_score,
    pesq_wb,
    score_pair,
    ssnr,
    stoi,
    stoi_score,
    wss,
)
from upcycle_se.metrics.composite_measures import llr_frames, segsnr_frames

SR = 16000


def synth_speech(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like signal ``[time]`` at 16 kHz: voiced syllables (harmonics of a gliding f0
    shaped by three formants) and pauses, with breath noise and a -50 dB recording floor.

    ``np.random.RandomState`` is used because its stream is frozen across numpy versions.
    """
    rs = np.random.RandomState(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = np.array([500.0, 1500.0, 2500.0]) * (1 + 0.1 * seed % 3)
    voiced = np.zeros_like(t)
    for h in range(1, 30):
        amp = sum(1.0 / (1 + ((h * f0 - f) / 120.0) ** 2) for f in formants) / h ** 0.5
        voiced += amp * np.sin(h * phase)
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t + seed), 0, None) ** 0.5
    sig = voiced * envelope + (0.05 * envelope + 0.003) * rs.randn(t.size)
    return 0.3 * sig / np.max(np.abs(sig))


def add_white_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.RandomState(seed).randn(x.size)
    noise *= math.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return x + noise


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 3.5 s of real synthetic speech from flite (slt voice), float64 at 16 kHz."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite): needed for the speech-signal tests")
    path = tmp_path_factory.mktemp("flite") / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "Please call Stella and ask her to bring these things "
                    "with her from the store.", "-o", str(path)], check=True, capture_output=True)
    sig, sr = read_audio(path)
    return resample_audio(sig, sr, SR).double().numpy()


# --- PESQ / STOI wrappers ----------------------------------------------------------------------------

def test_pesq_and_stoi_equal_direct_library_calls(speech):
    """The wrappers return what pesq.pesq(16000, ..., 'wb') and pystoi.stoi(..., 16000) return (to 1e-12:
    numpy's SIMD sums can differ in the last bit with array alignment)."""
    noisy = add_white_noise(speech, 10.0)
    assert pesq_wb(speech, noisy) == pytest.approx(pesq_lib.pesq(SR, speech, noisy, "wb"), rel=1e-12)
    assert stoi(speech, noisy) == pytest.approx(pystoi.stoi(speech, noisy, SR), rel=1e-12)
    assert stoi(speech, noisy, extended=True) == pytest.approx(pystoi.stoi(speech, noisy, SR, extended=True),
                                                               rel=1e-12)
    # torch float32 in: equal to the library on the same float32 samples
    ref32, deg32 = torch.from_numpy(speech).float(), torch.from_numpy(noisy).float()
    assert pesq_wb(ref32, deg32) == pytest.approx(pesq_lib.pesq(SR, ref32.numpy(), deg32.numpy(), "wb"), abs=1e-6)
    assert 1.0 < pesq_wb(speech, noisy) < 2.5 and 0.7 < stoi(speech, noisy) < 0.99


def test_identical_signals_give_the_ceilings(speech):
    """Identical signals: PESQ-WB 4.644 (P.862.2's ceiling), STOI = ESTOI = 1, LLR = WSS = 0, segSNR at its
    35 dB clamp, and CSIG/CBAK/COVL clipped to 5 (unclipped they would be 5.89, 6.06, 5.33)."""
    assert pesq_wb(speech, speech) == pytest.approx(4.6439, abs=1e-3)
    assert stoi(speech, speech) == pytest.approx(1.0, abs=1e-9)
    assert stoi(speech, speech, extended=True) == pytest.approx(1.0, abs=1e-9)
    c = composite(speech, speech)
    assert c["llr"] == pytest.approx(0.0, abs=1e-9)
    assert c["wss"] == pytest.approx(0.0, abs=1e-9)
    assert c["ssnr"] == 35.0
    assert (c["csig"], c["cbak"], c["covl"]) == (5.0, 5.0, 5.0)


def test_int16_input_scores_like_the_same_samples_as_float(speech):
    """int16 PCM is scaled by 1/32768, so an int16 pair scores exactly like its float version."""
    noisy = add_white_noise(speech, 5.0)
    ref16 = np.round(speech * 32767).astype(np.int16)
    deg16 = np.round(np.clip(noisy, -1, 1) * 32767).astype(np.int16)
    as_float = score_pair(ref16 / 32768.0, deg16 / 32768.0, ("pesq", "stoi", "csig", "ssnr"))
    assert score_pair(ref16, deg16, ("pesq", "stoi", "csig", "ssnr")) == as_float
    # mixing an int16 reference with a float estimate keeps the segSNR of the float pair
    assert ssnr(ref16, deg16 / 32768.0) == pytest.approx(as_float["ssnr"], abs=1e-12)


def test_measures_improve_monotonically_with_snr(speech):
    """White noise at 0, 10, 20, 30, 40 dB SNR on flite speech: PESQ, STOI, CBAK and segSNR rise strictly,
    LLR and WSS (distances) fall strictly. CSIG and COVL never fall and rise strictly once above their
    floor: at 0 dB white noise (PESQ-WB ~1.02, LLR ~4) their regressions go below 1 and are clipped to 1."""
    snrs = (0, 10, 20, 30, 40)
    rows = [score_pair(speech, add_white_noise(speech, snr), ("pesq", "stoi", "csig", "cbak", "covl",
                                                             "ssnr", "llr", "wss"))
            for snr in snrs]
    series = {name: [r[name] for r in rows] for name in rows[0]}
    for name in ("pesq", "stoi", "cbak", "ssnr"):
        assert all(a < b for a, b in zip(series[name], series[name][1:])), (name, series[name])
    for name in ("llr", "wss"):
        assert all(a > b for a, b in zip(series[name], series[name][1:])), (name, series[name])
    for name in ("csig", "covl"):
        values = series[name]
        assert values[0] == 1.0 and all(a <= b for a, b in zip(values, values[1:])), (name, values)
        assert all(a < b for a, b in zip(values[2:], values[3:])) and values[2] > 1.0, (name, values)
    assert series["stoi"][-1] > 0.99 and series["pesq"][-1] > 2.5


# --- composite ingredients on hand-computable cases -------------------------------------------------

def test_segsnr_of_a_scaled_copy_is_computed_by_hand():
    """deg = g * ref makes the error (1 - g) * ref in every frame, so each frame's SNR is
    -20 log10 |1 - g| dB: 6.0206 for g = 0.5, 20 for g = 0.9, 35 (clamped from 40) for g = 0.99,
    -10 (clamped from -12.04) for g = 5; a silent estimate gives 0 dB (error = reference)."""
    x = synth_speech(1.0)
    # 1e-6 dB: composite.m's "+ eps" in the ratio matters only in the quietest frames
    assert ssnr(x, 0.5 * x) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert ssnr(x, 0.9 * x) == pytest.approx(20.0, abs=1e-6)
    assert ssnr(x, 0.99 * x) == 35.0
    assert ssnr(x, 5.0 * x) == -10.0
    assert ssnr(x, np.zeros_like(x)) == pytest.approx(0.0, abs=1e-9)
    # 30 ms frames, 75 % overlap, composite.m's frame count floor((L - 480) / 120)
    assert segsnr_frames(x, x).shape == ((x.size - 480) // 120,)


def test_segsnr_averages_clamped_frames():
    """Half the signal scaled by 0.9 (20 dB frames), half by 5 (-10 dB after the clamp): the frames that
    lie wholly in one half have exactly those values, and the mean is their frame-count-weighted mean
    plus the straddling frames, which lie between the two."""
    x = synth_speech(2.0)
    half = 120 * 133  # a frame boundary
    deg = np.concatenate([0.9 * x[:half], 5.0 * x[half:]])
    frames = segsnr_frames(x, deg)
    first_straddling = (half - 480) // 120 + 1
    assert np.allclose(frames[:first_straddling], 20.0, atol=1e-9)
    assert np.allclose(frames[half // 120:], -10.0)
    assert np.all((frames[first_straddling:half // 120] < 20.0) & (frames[first_straddling:half // 120] >= -10))
    assert ssnr(x, deg) == pytest.approx(frames.mean(), abs=1e-12)


def test_llr_of_an_ma1_frame_against_a_flat_one_matches_the_determinant_formula():
    """A hand-computable LLR. The reference repeats an impulse pair (1 at n, c at n + 1) every 120 samples
    (= the hop), so every 480-sample analysis frame holds the same four pairs: its autocorrelation has only
    lags 0 and 1 (r0, r1 from the Hann weights, computed below by hand). The degraded signal repeats a single
    impulse: zero autocorrelation at lags 1..16, so its LPC filter is [1, 0, ..., 0] and the LLR numerator
    is r0. The denominator is the order-16 prediction error of the reference, r0 * D17 / D16, where D_n is
    the determinant of the n x n tridiagonal Toeplitz matrix with unit diagonal and rho = r1 / r0:
    D_n = D_{n-1} - rho^2 D_{n-2}. Hence LLR = log(D16 / D17) -- no Levinson recursion involved."""
    n0, c, period, length = 30, 0.5, 120, SR
    ref, deg = np.zeros(length), np.zeros(length)
    ref[n0::period] = 1.0
    ref[n0 + 1::period] = c
    deg[n0::period] = 1.0
    w = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, 481) / 481))  # composite.m's window
    pos = n0 + period * np.arange(4)
    r0 = np.sum(w[pos] ** 2 + c ** 2 * w[pos + 1] ** 2)
    r1 = c * np.sum(w[pos] * w[pos + 1])
    rho2 = (r1 / r0) ** 2
    det = [1.0, 1.0]
    for _ in range(16):
        det.append(det[-1] - rho2 * det[-2])
    expected = math.log(det[16] / det[17])
    assert llr(ref, deg) == pytest.approx(expected, rel=1e-9)
    assert 0.2 < expected < math.log(1 + c ** 2)  # below the infinite-order limit log(1 + c^2)


def test_llr_and_wss_are_zero_for_a_gain_and_wss_is_symmetric():
    """LPC and spectral slopes ignore a common gain, so LLR = WSS = 0 for deg = 0.3 * ref; WSS averages the
    two signals' weights, so swapping them leaves it unchanged (LLR, using the reference's autocorrelation,
    does not)."""
    x = synth_speech(1.5, seed=0)
    y = add_white_noise(x, 5.0)
    assert llr(x, 0.3 * x) == pytest.approx(0.0, abs=1e-9)
    assert wss(x, 0.3 * x) == pytest.approx(0.0, abs=1e-6)
    assert wss(x, y) == pytest.approx(wss(y, x), rel=1e-12)
    assert llr(x, y) > 0 and llr(y, x) > 0 and abs(llr(x, y) - llr(y, x)) > 1e-3


@pytest.mark.parametrize("seed", range(8))
def test_llr_and_wss_are_nonnegative_distances(seed):
    """LLR >= 0 because the reference's own LPC filter minimises the prediction error over its
    autocorrelation (the numerator can only be larger); WSS is a weighted sum of squares. Checked on random
    AR(1) references (pole in [-0.95, 0.95]) against randomly filtered, scaled, noisy versions of them.
    (Seeded cases rather than hypothesis: hypothesis' pytest plugin crashes on speechbrain's lazy modules.)"""
    rs = np.random.RandomState(seed)
    pole, gain = rs.uniform(-0.95, 0.95), rs.uniform(0.05, 3.0)
    e = rs.randn(8000)
    ref = np.empty_like(e)
    ref[0] = e[0]
    for n in range(1, e.size):
        ref[n] = pole * ref[n - 1] + e[n]
    deg = gain * (np.convolve(ref, rs.randn(5), mode="same") + rs.rand() * rs.randn(ref.size))
    frames = llr_frames(ref, deg)
    assert frames.size == (ref.size - 480) // 120 and np.all(frames >= -1e-9)
    assert llr(ref, deg) >= 0 and wss(ref, deg) >= 0


def test_llr_and_wss_match_an_independent_implementation():
    """Reference values from an independent implementation, recorded once offline: the loop-based Python
    port of Loizou's composite.m in facebookresearch/denoiser ``scripts/matlab_eval.py`` (the one SpeechBrain's
    MetricGAN-U recipe also copies), run on exactly this signal pair (deterministic RandomState streams),
    with composite.m's ``+ eps`` and 95 % trimming. Tolerance 1e-7 relative: the two agree to 1e-13 on
    this machine, the margin covers libm/FFT differences between platforms."""
    x = synth_speech(2.0, seed=0)
    d = x + 0.02 * np.random.RandomState(7).randn(x.size)
    assert llr(x, d) == pytest.approx(0.4174254275356696, rel=1e-7)
    assert wss(x, d) == pytest.approx(21.868482321615982, rel=1e-7)


def test_composite_regressions_reproduce_loizous_published_example():
    """Loizou's composite.m readme: for sp09.wav vs enhanced_logmmse.wav it prints
    LLR=0.681368 SNRseg=3.991727 WSS=49.671978 PESQ=2.255732 and c=3.3050, b=2.6160, o=2.7133 (4 decimals)."""
    csig, cbak, covl = composite_from_measures(llr=0.681368, wss=49.671978, segsnr=3.991727, pesq=2.255732)
    assert csig == pytest.approx(3.3050, abs=5e-5)
    assert cbak == pytest.approx(2.6160, abs=5e-5)
    assert covl == pytest.approx(2.7133, abs=5e-5)
    # limited to the MOS range [1, 5]; NaN PESQ gives NaN ratings
    assert composite_from_measures(llr=2.0, wss=90.0, segsnr=-10.0, pesq=1.0) == (1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in composite_from_measures(0.5, 30.0, 5.0, math.nan))


# --- edge cases --------------------------------------------------------------------------------------

def test_silence_gives_nan_with_a_warning_never_a_pesq_crash():
    """Silent reference: every reference-based measure is NaN. Silent estimate: PESQ (which would crash
    inside the C library) and the PESQ-based ratings are NaN; STOI is 0 and segSNR 0 dB (defined)."""
    x = synth_speech(1.0)
    silent = np.zeros_like(x)
    with pytest.warns(MetricWarning, match="reference is silent"):
        assert math.isnan(pesq_wb(silent, x))
    with pytest.warns(MetricWarning, match="reference is silent"):
        assert math.isnan(stoi(silent, x))
    with pytest.warns(MetricWarning, match="degraded/enhanced signal is silent"):
        row = score_pair(x, silent, ("pesq", "stoi", "csig", "cbak", "covl", "ssnr"))
    assert all(math.isnan(row[k]) for k in ("pesq", "csig", "cbak", "covl"))
    assert row["stoi"] == pytest.approx(0.0, abs=1e-6)
    assert row["ssnr"] == pytest.approx(0.0, abs=1e-9)


def test_too_short_signals_give_nan_with_a_warning():
    """Below 0.25 s PESQ is undefined (P.862's minimum); STOI needs 30 frames (~0.4 s) of speech, where
    pystoi itself would return a misleading 1e-5."""
    x = synth_speech(0.2)
    y = add_white_noise(x, 10)
    with pytest.warns(MetricWarning, match="0.25 s"):
        assert math.isnan(pesq_wb(x, y))
    with pytest.warns(MetricWarning, match="30 frames"):
        assert math.isnan(stoi(x, y))
    with pytest.warns(MetricWarning, match="no complete 30 ms frame"):
        assert math.isnan(ssnr(x[:500], y[:500]))


def test_invalid_input_raises_one_line_audio_errors():
    x = synth_speech(1.0)
    bad = x.copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        pesq_wb(x, bad)
    bad[100] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        composite(bad, x)
    with pytest.raises(AudioError, match="expected a mono 1-D signal"):
        stoi(np.stack([x, x]), np.stack([x, x]))
    with pytest.raises(AudioError, match="empty"):
        ssnr(np.zeros(0), np.zeros(0))
    with pytest.raises(AudioError, match="more than the 0.1 s allowed"):
        pesq_wb(x, x[: x.size - 2000])
    # [1, T] and [T, 1] are accepted as mono
    assert stoi(x[None, :], x[:, None]) == pytest.approx(1.0, abs=1e-9)


def test_small_length_difference_truncates_with_a_warning():
    """Up to 0.1 s of difference: both are cut to the shorter, exactly as if the caller had cut them."""
    x = synth_speech(1.5)
    y = add_white_noise(x, 10)[:-37]
    with pytest.warns(MetricWarning, match="lengths differ by 37 samples"):
        got = score_pair(x, y, ("pesq", "stoi", "ssnr"))
    assert got == score_pair(x[:-37], y, ("pesq", "stoi", "ssnr"))


# --- SpeechBrain MetricStats integration --------------------------------------------------------------

def _padded_batch():
    """Two utterances padded to one [2, T] batch, with relative lengths, and the unpadded pairs."""
    a, b = synth_speech(1.5, seed=0), synth_speech(1.0, seed=1)
    da, db = add_white_noise(a, 5, seed=2), add_white_noise(b, 15, seed=3)
    T = a.size
    target, predict = torch.zeros(2, T), torch.zeros(2, T)
    target[0], predict[0] = torch.from_numpy(a), torch.from_numpy(da)
    target[1, : b.size], predict[1, : b.size] = torch.from_numpy(b), torch.from_numpy(db)
    predict[1, b.size:] = 0.5  # junk in the padding: must not be scored
    lengths = torch.tensor([1.0, b.size / T])
    pairs = [(target[0].numpy(), predict[0].numpy()), (target[1, : b.size].numpy(), predict[1, : b.size].numpy())]
    return predict, target, lengths, pairs


def test_quality_stats_trims_by_relative_length_and_summarises():
    predict, target, lengths, pairs = _padded_batch()
    stats = QualityStats(metrics=("pesq", "stoi", "csig", "ssnr"))
    stats.append(["u1", "u2"], predict=predict, target=target, lengths=lengths)
    expected = [score_pair(t, p, ("pesq", "stoi", "csig", "ssnr")) for t, p in pairs]
    assert stats.ids == ["u1", "u2"] and stats.scores == expected
    summary = stats.summarize()
    assert list(summary) == ["pesq", "stoi", "csig", "ssnr"]
    assert summary["pesq"] == pytest.approx((expected[0]["pesq"] + expected[1]["pesq"]) / 2)
    assert stats.summarize("stoi") == pytest.approx((expected[0]["stoi"] + expected[1]["stoi"]) / 2)
    assert expected[0]["ssnr"] < expected[1]["ssnr"]  # 5 dB vs 15 dB input SNR


def test_quality_stats_parallel_equals_sequential_and_writes_csv(tmp_path):
    predict, target, lengths, _ = _padded_batch()
    seq, par = QualityStats(metrics=("pesq", "stoi", "covl")), QualityStats(metrics=("pesq", "stoi", "covl"),
                                                                            n_jobs=2)
    for s in (seq, par):
        s.append(["u1", "u2"], predict=predict, target=target, lengths=lengths)
    assert par.scores == seq.scores
    par.write_csv(tmp_path / "scores.csv")
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "file,pesq,stoi,covl" and len(lines) == 3
    assert lines[1].startswith("u1,") and float(lines[1].split(",")[1]) == pytest.approx(seq.scores[0]["pesq"],
                                                                                          rel=1e-5)


def test_quality_stats_skips_nan_in_means_and_says_so(tmp_path):
    x = synth_speech(1.0)
    stats = QualityStats(metrics=("pesq", "stoi"))
    batch_target = torch.from_numpy(np.stack([x, x])).float()
    batch_predict = torch.from_numpy(np.stack([add_white_noise(x, 10), np.zeros_like(x)])).float()
    with pytest.warns(MetricWarning, match="u2: PESQ undefined"):
        stats.append(["u1", "u2"], predict=batch_predict, target=batch_target)
    with pytest.warns(MetricWarning, match="pesq: 1 of 2 utterances undefined"):
        assert stats.summarize("pesq") == stats.scores[0]["pesq"]
    assert stats.describe()["pesq"]["n_nan"] == 1
    stats.write_csv(tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[2].startswith("u2,nan,")
    bad = batch_predict.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(AudioError, match="u1: prediction contains NaN"):
        stats.append(["u1", "u2"], predict=bad, target=batch_target)


def test_per_metric_functions_work_with_speechbrain_metricstats():
    """speechbrain's MetricStats(batch_eval=False) calls metric(predict_i, target_i) on trimmed pairs,
    sequentially (n_jobs=1) or via its joblib multiprocess path (n_jobs=2); invalid input gives NaN."""
    predict, target, lengths, pairs = _padded_batch()
    for n_jobs in (1, 2):
        ms = MetricStats(metric=pesq_score, n_jobs=n_jobs, batch_eval=False)
        ms.append(["u1", "u2"], predict=predict, target=target, lengths=lengths)
        assert ms.scores == pytest.approx([pesq_wb(t, p) for t, p in pairs])
    ms = MetricStats(metric=stoi_score, batch_eval=False)
    ms.append(["u1", "u2"], predict=predict, target=target, lengths=lengths)
    assert ms.summarize("average") == pytest.approx(np.mean([stoi(t, p) for t, p in pairs]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        assert math.isnan(pesq_score(torch.full((16000,), float("nan")), torch.ones(16000)))
