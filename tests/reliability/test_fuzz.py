"""Fuzzing the audio loaders and the metric entry points with hypothesis.

Random lengths (0 to 1.5 s), sample types (int16, int32, float32, float64), rates, mono/stereo layouts,
NaN, inf, silence, near-silence, DC, clipping (values far beyond full scale), truncated or overwritten
files. The contract: a result that is finite (or NaN *with* a :class:`MetricWarning`, for a measure that is
undefined on valid input), or one :class:`AudioError` line. Any other exception is a bug.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from upcycle_se.audio import load_mono, read_audio
from upcycle_se.errors import AudioError
from upcycle_se.metrics import MetricWarning, QualityStats, composite, pesq_wb, ssnr, stoi

#: Examples per property: modest for CI; UPCYCLE_FUZZ_EXAMPLES=2000 for a deep run by hand.
FUZZ = settings(max_examples=int(os.environ.get("UPCYCLE_FUZZ_EXAMPLES", 50)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
DTYPES = ("int16", "int32", "float32", "float64")
KINDS = ("speech", "noise", "silence", "tiny", "dc", "clipping", "nan", "inf")
SUBTYPES = {"int16": "PCM_16", "int32": "PCM_32", "float32": "FLOAT", "float64": "DOUBLE"}
#: Ranges the measures are defined on (composite's CSIG/CBAK/COVL are clipped to the MOS scale,
#: segmental SNR's frames to [-10, 35] dB; LLR and WSS are distances). LLR is the log of a ratio that is
#: >= 1 in exact arithmetic; against a silent or constant reference (a singular autocorrelation matrix)
#: round-off gives down to -1.4e-3 (seen), hence its margin.
RANGES = {"pesq": (1.0, 4.65), "stoi": (-1.0, 1.0), "csig": (1.0, 5.0), "cbak": (1.0, 5.0), "covl": (1.0, 5.0),
          "ssnr": (-10.0, 35.0), "llr": (-0.01, math.inf), "wss": (0.0, math.inf)}


def make_signal(kind: str, n: int, channels: int, dtype: str, seed: int) -> np.ndarray:
    """``[n, channels]`` samples of ``dtype``; float kinds scaled to full scale for integer types."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    if kind == "speech":
        x = (0.3 * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * t)))
        x = x + 0.01 * rng.standard_normal(n)
    elif kind == "noise":
        x = 0.2 * rng.standard_normal(n)
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "tiny":
        x = 1e-30 * rng.standard_normal(n)
    elif kind == "dc":
        x = np.full(n, 0.5)
    elif kind == "clipping":
        x = 50.0 * rng.standard_normal(n)
    else:
        x = 0.1 * rng.standard_normal(n)
        if n and dtype.startswith("float"):
            x[rng.integers(n)] = np.nan if kind == "nan" else -np.inf
    x = np.repeat(x[:, None], channels, axis=1)
    if dtype.startswith("int"):
        full = np.iinfo(dtype).max
        return np.clip(np.nan_to_num(x) * full, -full - 1, full).astype(dtype)
    return x.astype(dtype)


# -------------------------------------------------------------------------------------------- audio
@st.composite
def audio_files(draw):
    return dict(
        n=draw(st.sampled_from([0, 1, 7]) | st.integers(0, 24000)),
        channels=draw(st.sampled_from([1, 1, 2])),
        dtype=draw(st.sampled_from(DTYPES)),
        kind=draw(st.sampled_from(KINDS)),
        sr=draw(st.sampled_from([8000, 16000, 22050, 44100, 48000])),
        fmt=draw(st.sampled_from(["wav", "wav", "flac"])),
        damage=draw(st.sampled_from([None, None, "truncate", "overwrite"])),
        where=draw(st.floats(0.0, 1.0)),
        seed=draw(st.integers(0, 2 ** 16)),
    )


def write_file(folder: Path, spec: dict) -> Path:
    path = folder / f"x.{spec['fmt']}"
    data = make_signal(spec["kind"], spec["n"], spec["channels"], spec["dtype"], spec["seed"])
    subtype = "PCM_16" if spec["fmt"] == "flac" else SUBTYPES[spec["dtype"]]
    if spec["fmt"] == "flac" and data.dtype.kind == "f":  # FLAC stores integers; libsndfile refuses NaN
        data = np.nan_to_num(data, posinf=1.0, neginf=-1.0)
    sf.write(path, data, spec["sr"], subtype=subtype)
    raw = bytearray(path.read_bytes())
    at = int(spec["where"] * len(raw))
    if spec["damage"] == "truncate":
        raw = raw[:at]
    elif spec["damage"] == "overwrite":  # 16 random bytes somewhere (header or samples)
        raw[at:at + 16] = np.random.default_rng(spec["seed"]).bytes(16)
    path.write_bytes(bytes(raw))
    return path


def assert_audio_error(err: AudioError, path: Path) -> None:
    msg = str(err)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg


@FUZZ
@given(spec=audio_files())
def test_read_audio_and_load_mono_give_finite_float32_or_one_audio_error(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_file(Path(tmp), spec)
        for multichannel in (False, True):
            try:
                sig, sr = read_audio(path, allow_multichannel=multichannel)
            except AudioError as err:
                assert_audio_error(err, path)
                event(f"read_audio: AudioError ({str(err)[len(str(path)) + 2:].split(' (')[0]})")
                if spec["damage"] is None:  # an intact file fails only for a reason of its own
                    assert (spec["n"] == 0 or (spec["kind"] in ("nan", "inf") and spec["dtype"].startswith("float")
                                               and spec["fmt"] == "wav")
                            or (spec["channels"] == 2 and not multichannel)), str(err)
                continue
            assert sig.dtype == torch.float32 and sig.numel() > 0 and torch.isfinite(sig).all()
            event("read_audio: read" + (" (damaged file)" if spec["damage"] else ""))
            assert sr == spec["sr"] or spec["damage"] is not None
            expected_dims = 2 if multichannel else 1
            assert sig.dim() == expected_dims
            if spec["damage"] is None:
                assert sig.shape[-1] == spec["n"]
                if spec["dtype"].startswith("int") or spec["fmt"] == "flac":
                    assert sig.abs().max() <= 1.0
        try:
            mono = load_mono(path, 16000)
        except AudioError as err:
            assert_audio_error(err, path)
            return
        assert mono.dim() == 1 and mono.dtype == torch.float32 and torch.isfinite(mono).all()
        if spec["damage"] is None:
            assert mono.shape[0] == math.ceil(spec["n"] * 16000 / spec["sr"])


# ------------------------------------------------------------------------------------------ metrics
@st.composite
def signal_pairs(draw):
    """(reference, degraded): mostly valid pairs (so that the measures themselves run), some invalid."""
    n = draw(st.sampled_from([0, 1, 100, 409, 410, 3999, 4000]) | st.integers(4000, 24000) | st.integers(0, 24000))
    diff = draw(st.sampled_from([0] * 6 + [1, -37, 1600, -1601, 5000]))
    layout = draw(st.sampled_from(["1d"] * 6 + ["row", "column", "stereo", "stereo_t"]))
    as_tensor = draw(st.booleans())
    kinds = ("speech",) * 4 + ("noise",) * 2 + KINDS

    def one(role, length):
        x = make_signal(draw(st.sampled_from(kinds), label=f"{role} kind"), max(length, 0), 1,
                        draw(st.sampled_from(DTYPES), label=f"{role} dtype"), draw(st.integers(0, 999)))[:, 0]
        x = {"1d": x, "row": x[None], "column": x[:, None], "stereo": np.stack([x, x]),
             "stereo_t": np.stack([x, x], axis=1)}[layout]
        return torch.from_numpy(np.ascontiguousarray(x)) if as_tensor else x

    return one("ref", n), one("deg", n + diff)


def call_metric(fn, ref, deg):
    """(values dict, MetricWarning messages), or the AudioError raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(ref, deg)
        except AudioError as err:
            return err, []
    values = out if isinstance(out, dict) else {fn.__name__: out}
    return values, [str(w.message) for w in caught if issubclass(w.category, MetricWarning)]


@FUZZ
@given(pair=signal_pairs())
def test_metrics_give_values_in_range_nan_with_a_warning_or_one_audio_error(pair):
    ref, deg = pair
    for fn in (pesq_wb, stoi, ssnr, composite):
        values, warned = call_metric(fn, ref, deg)
        if isinstance(values, AudioError):
            assert "\n" not in str(values) and str(values)
            event(f"{fn.__name__}: AudioError")
            continue
        for name, value in values.items():
            name = {"pesq_wb": "pesq"}.get(name, name)
            assert isinstance(value, float), (name, type(value))
            if math.isnan(value):
                assert warned, f"{fn.__name__}: {name} is NaN without a MetricWarning"
                event(f"{fn.__name__}: {name} NaN + MetricWarning")
            else:
                event(f"{fn.__name__}: {name} finite")
                low, high = RANGES[name]
                assert low - 1e-6 <= value <= high + 1e-6, (name, value)


@FUZZ
@given(batch=st.integers(1, 3), n=st.integers(1, 20000), kind=st.sampled_from(KINDS),
       rel=st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), seed=st.integers(0, 999))
def test_quality_stats_append_and_summarize(batch, n, kind, rel, seed):
    rng = np.random.default_rng(seed)
    target = torch.from_numpy(0.2 * rng.standard_normal((batch, n))).float()
    predict = torch.from_numpy(make_signal(kind, n * batch, 1, "float32", seed)[:, 0].reshape(batch, n).copy())
    lengths = torch.tensor(rel[:batch])
    stats = QualityStats(metrics=("pesq", "stoi", "ssnr"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stats.append([f"u{i}" for i in range(batch)], predict=predict, target=target, lengths=lengths)
        except AudioError as err:
            empty = any(round(r * n) == 0 for r in rel[:batch])  # a relative length rounding to no sample
            nonfinite = kind in ("nan", "inf")
            assert (empty and "empty signal (0 samples)" in str(err)) or (
                nonfinite and re.match(r"u\d: prediction contains NaN or infinite samples$", str(err))), str(err)
            return
        summary = stats.summarize()
    assert set(summary) == {"pesq", "stoi", "ssnr"} and len(stats.scores) == batch
    warned = [str(w.message) for w in caught if issubclass(w.category, MetricWarning)]
    for name, value in summary.items():
        if math.isnan(value):
            assert any(name in msg or "undefined" in msg for msg in warned), (name, warned)
        else:
            assert RANGES[name][0] - 1e-6 <= value <= RANGES[name][1] + 1e-6


def test_fuzz_found_cases_stay_fixed():
    """Pinned: what the fuzzers found (STOI of a signal shorter than one 25.6 ms STOI frame raised numpy's
    AxisError from inside pystoi) and the inputs they are most likely to break on: an empty, a one-sample
    and a huge-valued signal, silence against speech."""
    speech = make_signal("speech", 16000, 1, "float32", 0)[:, 0]
    for n in (1, 100, 409, 410):
        values, warned = call_metric(stoi, speech[:n], speech[:n])
        assert math.isnan(values["stoi"]) and any("less than 30 frames" in w for w in warned)
    with pytest.raises(AudioError, match="empty signal"):
        pesq_wb(np.zeros(0), np.zeros(0))
    values, warned = call_metric(pesq_wb, speech[:1], speech[:1])
    assert math.isnan(values["pesq_wb"]) and warned
    values, warned = call_metric(composite, speech, 1e6 * speech)
    assert all(math.isfinite(v) or warned for v in values.values())
    values, warned = call_metric(stoi, np.zeros(16000), speech)
    assert math.isnan(values["stoi"]) and any("silent" in w for w in warned)
