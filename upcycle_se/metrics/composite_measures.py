"""The composite measures of Hu & Loizou (2008): CSIG, CBAK, COVL, and their ingredients LLR, WSS, segSNR.

References
----------
[HL08] Y. Hu and P. C. Loizou, "Evaluation of objective quality measures for speech enhancement",
       IEEE Trans. Audio, Speech, Lang. Process. 16(1):229-238, 2008 (Eqs. for Csig/Cbak/Covl, Sec. IV-C).
[L07]  P. C. Loizou, "Speech Enhancement: Theory and Practice", CRC Press 2007/2013: ``composite.m``
       and its helpers ``wss``, ``llr``, ``lpcoeff``, ``snr`` (after Pellom & Hansen), whose conventions are
       followed here step by step (frames, window, LPC order, floors, trimming, clamping).
[K82]  D. H. Klatt, "Prediction of perceived phonetic distance from critical-band spectra", ICASSP 1982
       (the WSS weights Kmax = 20, Klocmax = 1).

Conventions of [L07] reproduced here
------------------------------------
- Both signals are truncated to the shorter one and ``eps`` (2.22e-16, MATLAB's ``eps``) is added to every
  sample, which keeps the LPC analysis of digital silence finite.
- Frames of 30 ms with 75 % overlap (480 / 120 samples at 16 kHz), the window
  ``0.5 * (1 - cos(2 pi n / (N + 1)))``, n = 1..N, and ``floor((L - N) / hop)`` frames (composite.m's
  ``L/hop - N/hop`` loop bound, which leaves out the last full frame).
- LLR: autocorrelation LPC of order 10 below 10 kHz and 16 above; per frame
  ``log(a_d R_r a_d^T / a_r R_r a_r^T)``.
- WSS: 25 Gaussian-shaped critical-band filters (centre frequencies and bandwidths of [L07], covering 0-4 kHz
  at any rate), |FFT|^2 of size ``2^nextpow2(2N)``, band energies floored at 1e-10 before dB, Klatt's
  weights, normalised by the sum of weights.
- LLR and WSS: the mean over the lowest 95 % of the frame values (composite.m's ``alpha = 0.95``), which
  discards outlier frames; segSNR: per-frame SNR clamped to [-10, 35] dB and averaged over *all* frames
  (no voice-activity detection).
- CSIG/CBAK/COVL: the regressions of [HL08], each limited to the MOS range [1, 5] as composite.m does.

Which PESQ feeds the regressions
--------------------------------
[HL08] fitted the regressions with the raw narrow-band P.862 score (composite.m notes it "was only validated
with the raw PESQ value"). The VoiceBank-DEMAND literature that Up-Cycle-SENet is compared with (SEGAN's
successors, MetricGAN/MetricGAN+, DEMUCS, CMGAN, ...) computes CSIG/CBAK/COVL with wide-band P.862.2 MOS-LQO
at 16 kHz in its place (e.g. facebookresearch/denoiser ``scripts/matlab_eval.py``), and so do we, so that our
table is comparable with theirs. Pass ``pesq_score`` to :func:`composite` to use another PESQ variant.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from upcycle_se.metrics.quality import pesq_aligned
from upcycle_se.metrics.signals import MAX_LEN_DIFF_S, SAMPLE_RATE, SignalLike, align_pair, undefined

# --- constants and where they come from -------------------------------------------------------------

#: MATLAB's ``eps``, added to both signals by composite.m before any measure.
EPS = float(np.finfo(np.float64).eps)
#: Frame length in ms; the hop is a quarter of it (75 % overlap) [L07].
FRAME_MS = 30.0
#: Fraction of the (sorted, smallest first) LLR and WSS frame values averaged [L07, composite.m].
TRIM_ALPHA = 0.95
#: segSNR clamp in dB [L07, ``snr``; Quackenbush et al. 1988].
SNR_MIN_DB, SNR_MAX_DB = -10.0, 35.0
#: WSS weighting constants "suggested by Klatt, pg 1280" [K82, via L07].
KMAX, KLOCMAX = 20.0, 1.0
#: Band energies below this are floored before taking dB [L07, ``wss``].
WSS_ENERGY_FLOOR = 1e-10
#: Critical-band centre frequencies and bandwidths in Hz, 25 bands spanning 4 kHz [L07, ``wss``].
CRIT_CENTRE_HZ = np.array([
    50.0000, 120.000, 190.000, 260.000, 330.000, 400.000, 470.000, 540.000, 617.372, 703.378,
    798.717, 904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08,
    2446.71, 2701.97, 2978.04, 3276.17, 3597.63])
CRIT_BANDWIDTH_HZ = np.array([
    70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 70.0000, 77.3724, 86.0056, 95.3398,
    105.411, 116.256, 127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631,
    255.255, 276.072, 298.126, 321.465, 346.136])
#: Regression coefficients of [HL08] (intercept, LLR, PESQ, WSS, segSNR), as in composite.m.
CSIG_COEF = dict(intercept=3.093, llr=-1.029, pesq=0.603, wss=-0.009, segsnr=0.0)
CBAK_COEF = dict(intercept=1.634, llr=0.0, pesq=0.478, wss=-0.007, segsnr=0.063)
COVL_COEF = dict(intercept=1.594, llr=-0.512, pesq=0.805, wss=-0.007, segsnr=0.0)
#: The MOS range the three ratings are limited to [L07].
MOS_MIN, MOS_MAX = 1.0, 5.0


# --- public API ----------------------------------------------------------------------------------------

def composite(ref: SignalLike, deg: SignalLike, pesq_score: Optional[float] = None,
              max_len_diff_s: float = MAX_LEN_DIFF_S) -> Dict[str, float]:
    """CSIG, CBAK, COVL of ``deg`` against ``ref`` (16 kHz), with their ingredients.

    Arguments
    ---------
    ref, deg : ``[time]`` signals at 16 kHz (float or int PCM, numpy or torch).
    pesq_score : the PESQ value to put in the regressions; default: wide-band PESQ of the pair
        (see the module docstring for why).
    max_len_diff_s : see :func:`upcycle_se.metrics.signals.align_pair`.

    Returns
    -------
    ``{"csig", "cbak", "covl", "pesq", "ssnr", "llr", "wss"}``: ``ssnr`` is composite.m's segSNR (dB);
    ``llr`` and ``wss`` the 95 %-trimmed means. Where PESQ is undefined (silence, < 0.25 s) the three
    ratings are NaN too; where the signals are shorter than one frame everything is NaN.
    """
    ref, deg = align_pair(ref, deg, max_len_diff_s)
    if pesq_score is None:
        pesq_score = pesq_aligned(ref, deg)
    llr_v, wss_v, seg_v = _ingredients(ref, deg, SAMPLE_RATE)
    csig, cbak, covl = composite_from_measures(llr_v, wss_v, seg_v, pesq_score)
    return {"csig": csig, "cbak": cbak, "covl": covl, "pesq": float(pesq_score),
            "ssnr": seg_v, "llr": llr_v, "wss": wss_v}


def composite_from_measures(llr: float, wss: float, segsnr: float, pesq: float) -> Tuple[float, float, float]:
    """The [HL08] regressions, limited to [1, 5]: returns ``(csig, cbak, covl)``; NaN in, NaN out."""
    values = dict(llr=llr, wss=wss, segsnr=segsnr, pesq=pesq)

    def rating(coef):
        raw = coef["intercept"] + sum(coef[k] * values[k] for k in ("llr", "pesq", "wss", "segsnr") if coef[k])
        return float(np.clip(raw, MOS_MIN, MOS_MAX)) if np.isfinite(raw) else float("nan")

    return rating(CSIG_COEF), rating(CBAK_COEF), rating(COVL_COEF)


def ssnr(ref: SignalLike, deg: SignalLike, sample_rate: int = SAMPLE_RATE,
         max_len_diff_s: float = MAX_LEN_DIFF_S) -> float:
    """Segmental SNR in dB as in composite.m: per-frame SNR clamped to [-10, 35], averaged over all frames."""
    ref, deg = align_pair(ref, deg, max_len_diff_s, sample_rate)
    frames = segsnr_frames(ref + EPS, deg + EPS, sample_rate)
    return float(frames.mean()) if frames.size else _too_short("segSNR", ref.size, sample_rate)


def llr(ref: SignalLike, deg: SignalLike, sample_rate: int = SAMPLE_RATE,
        max_len_diff_s: float = MAX_LEN_DIFF_S) -> float:
    """Log-likelihood ratio (>= 0; 0 for identical signals), 95 %-trimmed mean over frames."""
    ref, deg = align_pair(ref, deg, max_len_diff_s, sample_rate)
    if not len(_frames(ref, sample_rate)):
        return _too_short("LLR", ref.size, sample_rate)
    return _trimmed_mean(llr_frames(ref + EPS, deg + EPS, sample_rate))


def wss(ref: SignalLike, deg: SignalLike, sample_rate: int = SAMPLE_RATE,
        max_len_diff_s: float = MAX_LEN_DIFF_S) -> float:
    """Weighted spectral slope distance (>= 0; 0 for identical signals), 95 %-trimmed mean over frames."""
    ref, deg = align_pair(ref, deg, max_len_diff_s, sample_rate)
    frames = wss_frames(ref + EPS, deg + EPS, sample_rate)
    return _trimmed_mean(frames) if frames.size else _too_short("WSS", ref.size, sample_rate)


# --- per-frame measures (inputs: aligned float64 arrays, eps already added) ---------------------------

def segsnr_frames(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame segmental SNR in dB, clamped to [-10, 35]: ``[frames]``."""
    r, d = _frames(ref, sample_rate), _frames(deg, sample_rate)
    signal = np.sum(r ** 2, axis=1)
    noise = np.sum((r - d) ** 2, axis=1)
    snr = 10.0 * np.log10(signal / (noise + EPS) + EPS)
    return np.clip(snr, SNR_MIN_DB, SNR_MAX_DB)


def llr_frames(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame LLR ``[frames]``; frames whose ratio is not a positive finite number are left out.

    Mathematically the ratio is >= 1 (the reference's own LPC filter minimises the prediction error on
    the reference), so such frames only arise from round-off on degenerate frames; a warning counts them.
    """
    order = 10 if sample_rate < 10000 else 16  # [L07, llr]: "this could vary depending on sampling frequency"
    r, d = _frames(ref, sample_rate), _frames(deg, sample_rate)
    if not len(r):
        return np.zeros(0)
    acf_r, a_r = _lpc(r, order)
    _, a_d = _lpc(d, order)
    lags = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1)[None, :])
    toeplitz_r = acf_r[:, lags]  # [frames, P+1, P+1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (np.einsum("fi,fij,fj->f", a_d, toeplitz_r, a_d)
                 / np.einsum("fi,fij,fj->f", a_r, toeplitz_r, a_r))
    ok = np.isfinite(ratio) & (ratio > 0)
    if not ok.all():
        undefined(f"LLR: {int((~ok).sum())} of {ok.size} frames numerically degenerate, left out")
    return np.log(ratio[ok])


def wss_frames(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-frame weighted spectral slope distance ``[frames]`` [K82, L07]."""
    win, _ = _frame_params(sample_rate)
    n_fft = 1 << int(np.ceil(np.log2(2 * win)))  # 2^nextpow2(2N) [L07]
    filters = _crit_filters(sample_rate, n_fft)  # [25, n_fft/2]
    r, d = _frames(ref, sample_rate), _frames(deg, sample_rate)
    if not len(r):
        return np.zeros(0)
    energy_r = _band_db(r, filters, n_fft)
    energy_d = _band_db(d, filters, n_fft)
    slope_r, slope_d = np.diff(energy_r, axis=1), np.diff(energy_d, axis=1)  # [frames, 24]
    weight = 0.5 * (_klatt_weights(energy_r, slope_r) + _klatt_weights(energy_d, slope_d))
    return np.sum(weight * (slope_r - slope_d) ** 2, axis=1) / np.sum(weight, axis=1)


# --- helpers -----------------------------------------------------------------------------------------

def _ingredients(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> Tuple[float, float, float]:
    """(LLR, WSS, segSNR) of an aligned pair as composite.m computes them (eps added here)."""
    ref, deg = ref + EPS, deg + EPS
    seg = segsnr_frames(ref, deg, sample_rate)
    if not seg.size:
        nan = _too_short("the composite measures", ref.size, sample_rate)
        return nan, nan, nan
    return (_trimmed_mean(llr_frames(ref, deg, sample_rate)),
            _trimmed_mean(wss_frames(ref, deg, sample_rate)), float(seg.mean()))


def _frame_params(sample_rate: int) -> Tuple[int, int]:
    """(window, hop) in samples: round(30 ms) (MATLAB rounding, halves away from 0) and floor(window / 4)."""
    win = int(np.floor(FRAME_MS * sample_rate / 1000.0 + 0.5))
    return win, win // 4


def _frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Windowed frames ``[frames, window]`` with composite.m's frame count ``floor((L - N) / hop)``."""
    win, hop = _frame_params(sample_rate)
    n_frames = max(0, (x.size - win) // hop)
    if n_frames == 0:
        return np.zeros((0, win))
    window = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, win + 1) / (win + 1)))
    return np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n_frames] * window


def _lpc(frames: np.ndarray, order: int) -> Tuple[np.ndarray, np.ndarray]:
    """Autocorrelation ``[F, P+1]`` and LPC polynomial ``[F, P+1]`` (``[1, -a_1, ..., -a_P]``) per frame.

    Levinson-Durbin written as in [L07] ``lpcoeff``, vectorised over frames.
    """
    n_frames, win = frames.shape
    acf = np.stack([np.sum(frames[:, :win - k] * frames[:, k:], axis=1) for k in range(order + 1)], axis=1)
    a = np.zeros((n_frames, order))
    err = acf[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            past = a[:, :i].copy()
            refl = (acf[:, i + 1] - np.sum(past * acf[:, i:0:-1], axis=1)) / err
            a[:, i] = refl
            a[:, :i] = past - refl[:, None] * past[:, ::-1]
            err = (1.0 - refl * refl) * err
    return acf, np.concatenate([np.ones((n_frames, 1)), -a], axis=1)


def _crit_filters(sample_rate: int, n_fft: int) -> np.ndarray:
    """The 25 Gaussian-shaped critical-band filters of [L07] on bins 0..n_fft/2-1: ``[25, n_fft/2]``.

    Equal area per filter (peak ``bw_min / bw``), and values below the -30 dB point set to 0.
    """
    half = n_fft // 2
    max_freq = sample_rate / 2.0
    bins = np.arange(half)
    f0 = np.floor(CRIT_CENTRE_HZ / max_freq * half)[:, None]
    bw = (CRIT_BANDWIDTH_HZ / max_freq * half)[:, None]
    norm = (np.log(CRIT_BANDWIDTH_HZ[0]) - np.log(CRIT_BANDWIDTH_HZ))[:, None]
    filt = np.exp(-11.0 * ((bins[None, :] - f0) / bw) ** 2 + norm)
    min_factor = np.exp(-30.0 / (2.0 * 2.303))  # the -30 dB point, as written in [L07]
    return filt * (filt > min_factor)


def _band_db(frames: np.ndarray, filters: np.ndarray, n_fft: int) -> np.ndarray:
    """Critical-band energies in dB ``[frames, 25]`` from |FFT|^2 of the frames."""
    spec = np.abs(np.fft.rfft(frames, n_fft, axis=1)[:, : n_fft // 2]) ** 2
    return 10.0 * np.log10(np.maximum(spec @ filters.T, WSS_ENERGY_FLOOR))


def _klatt_weights(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Klatt's per-band weights ``[frames, 24]``: near the global and the nearest local spectral peak.

    The nearest peak is searched to the right where the slope is positive and to the left otherwise, with
    [L07]'s indexing: rightwards it takes ``energy[n - 1]`` where ``n`` is the first band at or after ``i``
    whose slope is <= 0 (or the last band); leftwards ``energy[n + 1]`` where ``n`` is the first band at
    or before ``i`` whose slope is > 0 (or -1).
    """
    n_frames, n_slopes = slope.shape
    rising = slope > 0
    next_fall = np.empty((n_frames, n_slopes), dtype=np.int64)  # first n >= i with slope <= 0, else n_slopes
    nxt = np.full(n_frames, n_slopes)
    for i in range(n_slopes - 1, -1, -1):
        nxt = np.where(~rising[:, i], i, nxt)
        next_fall[:, i] = nxt
    prev_rise = np.empty((n_frames, n_slopes), dtype=np.int64)  # first n <= i with slope > 0, else -1
    prv = np.full(n_frames, -1)
    for i in range(n_slopes):
        prv = np.where(rising[:, i], i, prv)
        prev_rise[:, i] = prv
    peak_idx = np.where(rising, next_fall - 1, prev_rise + 1)
    loc_peak = np.take_along_axis(energy, peak_idx, axis=1)
    band = energy[:, :n_slopes]
    w_max = KMAX / (KMAX + energy.max(axis=1, keepdims=True) - band)
    w_locmax = KLOCMAX / (KLOCMAX + loc_peak - band)
    return w_max * w_locmax


def _trimmed_mean(values: np.ndarray) -> float:
    """Mean of the smallest ``round(0.95 n)`` values (MATLAB rounding) [L07]; NaN for no values."""
    if not values.size:
        return float("nan")
    keep = max(1, int(np.floor(values.size * TRIM_ALPHA + 0.5)))
    return float(np.sort(values)[:keep].mean())


def _too_short(what: str, n: int, sample_rate: int) -> float:
    win, hop = _frame_params(sample_rate)
    return undefined(f"{what} undefined: {n} samples give no complete {FRAME_MS:g} ms frame "
                     f"(need at least {win + hop})")
