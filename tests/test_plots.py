"""Spectrogram figures: axes mean what they say, one dB scale across panels, atomic valid PNGs."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from upcycle_se.plots import DYNAMIC_RANGE_DB, save_figure, save_spectrograms, spectrogram_figure


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def png_size(path: Path) -> tuple:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_panels_axes_and_shared_db_scale():
    sr = 16000
    loud = tone(1000, 1.0, sr)
    quiet = 0.1 * tone(3000, 1.5, sr)  # 20 dB below, another frequency, another length
    fig = spectrogram_figure({"noisy": torch.from_numpy(loud), "enhanced": quiet}, sample_rate=sr, title="t")
    panels, colorbar = fig.axes[:2], fig.axes[2]
    assert [ax.get_title(loc="left") for ax in panels] == ["noisy", "enhanced"]
    assert panels[1].get_xlabel() == "Time (s)" and panels[0].get_ylabel() == "Frequency (kHz)"
    assert colorbar.get_ylabel() == "Power (dB re. loudest bin)"
    assert fig._suptitle.get_text() == "t"
    for ax, freq, peak_db, seconds in ((panels[0], 1.0, 0.0, 1.0), (panels[1], 3.0, -20.0, 1.5)):
        image = ax.images[0]
        db = np.asarray(image.get_array())
        left, right, bottom, top = image.get_extent()
        assert (left, bottom, top) == (0.0, 0.0, 8.0) and right == pytest.approx(seconds, abs=0.04)
        assert db.max() == pytest.approx(peak_db, abs=0.5) and db.min() >= -DYNAMIC_RANGE_DB
        row = np.unravel_index(db.argmax(), db.shape)[0]  # the tone's row, mapped through the extent
        assert (row + 0.5) * top / db.shape[0] == pytest.approx(freq, abs=0.05)
    assert image.get_clim() == (-DYNAMIC_RANGE_DB, 0.0)


def test_stereo_is_averaged_and_other_rates_reach_their_nyquist():
    stereo = np.stack([tone(500, 0.5, 44100), tone(500, 0.5, 44100)])
    fig = spectrogram_figure({"clean": stereo}, sample_rate=44100)
    assert fig.axes[0].images[0].get_extent()[3] == pytest.approx(22.05)


def test_png_is_written_atomically_and_is_sane(tmp_path):
    sr = 16000
    signals = {"noisy": tone(440, 2.0, sr) + 0.05 * np.random.default_rng(0).standard_normal(2 * sr),
               "enhanced": tone(440, 2.0, sr), "clean": tone(440, 2.0, sr)}
    path = save_spectrograms(signals, sr, tmp_path / "figs" / "a.wav.png", title="a.wav")
    width, height = png_size(path)
    assert (width, height) == (1000, 720) and path.stat().st_size > 20_000  # 10 x 7.2 in at 100 dpi
    assert [p.name for p in path.parent.iterdir()] == ["a.wav.png"]

    class Broken:
        def savefig(self, f, **kwargs):
            f.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), path)
    assert png_size(path) == (1000, 720)  # the old figure is untouched
    assert [p.name for p in path.parent.iterdir()] == ["a.wav.png"]  # and no temporary file is left


@pytest.mark.parametrize("signals, rate, message", [
    ({}, 16000, "at least one signal"),
    ({"x": np.zeros(100)}, 0, "sample_rate must be a positive integer"),
    ({"x": np.zeros(0)}, 16000, "x: expected a non-empty"),
    ({"x": np.zeros((2, 2, 10))}, 16000, "x: expected a non-empty"),
    ({"x": np.array([0.0, np.nan])}, 16000, "x: contains NaN"),
])
def test_bad_input_is_one_line_value_error(signals, rate, message):
    with pytest.raises(ValueError, match=message) as err:
        spectrogram_figure(signals, rate)
    assert "\n" not in str(err.value)
