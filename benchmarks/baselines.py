"""Classical, training-free speech enhancers used as reference points in the quality benchmark.

All three work on the STFT of the noisy signal (Hann window, 32 ms frames, 75 % overlap, weighted
overlap-add resynthesis), keep the noisy phase, and differ only in the spectral gain:

* :func:`spectral_subtraction` -- power spectral subtraction with SNR-dependent over-subtraction and a
  spectral floor: S. F. Boll, "Suppression of acoustic noise in speech using spectral subtraction",
  IEEE Trans. ASSP 27(2), 1979; over-subtraction/floor rule from M. Berouti, R. Schwartz, J. Makhoul,
  "Enhancement of speech corrupted by acoustic noise", ICASSP 1979.
* :func:`wiener` -- Wiener gain ``xi / (1 + xi)`` on the decision-directed a-priori SNR
  (P. Scalart, J. V. Filho, "Speech enhancement based on a priori signal to noise estimation",
  ICASSP 1996).
* :func:`mmse_lsa` -- the MMSE log-spectral amplitude estimator with the decision-directed a-priori SNR:
  Y. Ephraim, D. Malah, "Speech enhancement using a minimum mean-square error log-spectral amplitude
  estimator", IEEE Trans. ASSP 33(2), 1985 (decision-directed rule from their 1984 MMSE-STSA paper; the
  a-priori SNR floor follows O. Cappé, IEEE Trans. SAP 2(2), 1994).

Noise PSD estimate (shared by all three; needs no clean signal and no leading silence): minima-controlled
recursive averaging, MCRA -- I. Cohen, B. Berdugo, "Noise estimation by minima controlled recursive
averaging for robust speech enhancement", IEEE Signal Processing Letters 9(1), 2002. A time-frequency
bin is judged speech-present when its smoothed periodogram exceeds ``delta`` times its running minimum;
the noise PSD is recursively averaged with a smoothing factor that rises towards 1 with the speech
presence probability. Deviation from the paper: the running minimum is an exact sliding-window minimum
over the last ``min_window_s`` seconds (Cohen's block-wise reset gives a window between L and 2L frames),
and the estimate is initialised from the bias-compensated minimum over the first window (``B_min`` as
in Cohen's IMCRA, 2003) rather than from the first frame, so a file that opens on speech does not start
with the speech taken for noise.

Every function takes a float waveform ``[time]`` (or ``[..., time]``, processed row by row in one
vectorised pass) and returns one of the same shape and length; the recursions that must run over frames
(MCRA averaging, decision-directed SNR) are loops over frames vectorised over frequency and batch.

``ENHANCERS`` adds to them the third-party denoisers of :mod:`benchmarks.peers` (RNNoise, WebRTC noise
suppression, noisereduce), with the same signature.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
from scipy.ndimage import convolve1d, minimum_filter1d
from scipy.signal import lfilter
from scipy.special import exp1

from benchmarks.peers import PEERS, waveform_rows

__all__ = ["spectral_subtraction", "wiener", "mmse_lsa", "mcra_noise_psd", "BASELINES", "ENHANCERS"]

_TINY = 1e-20


# --------------------------------------------------------------------------------------------- STFT
def _frame_params(sr: int, frame_ms: float) -> Tuple[int, int]:
    """``(n_fft, hop)``: a power of two near ``frame_ms`` and 75 % overlap (512 / 128 at 16 kHz)."""
    n_fft = int(2 ** round(np.log2(max(frame_ms * 1e-3 * sr, 16))))
    return n_fft, n_fft // 4


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``x [B, T]`` -> complex ``[B, F, N]`` with ``F = n_fft // 2 + 1``.

    The signal is reflect-padded by ``n_fft`` on the left and up to a whole number of hops on the right,
    so every real sample is covered by the full set of overlapping windows (constant overlap-add gain)
    and the padding looks like the neighbouring signal to the noise tracker rather than like silence.
    """
    T = x.shape[-1]
    n_frames = int(np.ceil((T + n_fft) / hop)) + 1
    right = (n_frames - 1) * hop + n_fft - (T + n_fft)
    mode = "reflect" if T > 1 else "constant"  # reflection needs at least two samples
    xp = np.pad(x, ((0, 0), (n_fft, right)), mode=mode)
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft, axis=-1)[:, ::hop]  # [B, N, n_fft]
    win = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    return np.fft.rfft(frames * win, axis=-1).transpose(0, 2, 1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Inverse of :func:`_stft` (weighted overlap-add): complex ``[B, F, N]`` -> ``[B, length]``."""
    B, _, N = spec.shape
    win = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1) * win  # [B, N, n_fft]
    r = n_fft // hop
    chunks = frames.reshape(B, N, r, hop)
    out = np.zeros((B, N + r - 1, hop))
    norm = np.zeros((N + r - 1, hop))
    wchunks = (win * win).reshape(r, hop)
    for i in range(r):  # r = 4 shifted adds instead of one add per frame
        out[:, i:i + N] += chunks[:, :, i]
        norm[i:i + N] += wchunks[i]
    out = out.reshape(B, -1)[:, n_fft:n_fft + length]
    norm = norm.reshape(-1)[n_fft:n_fft + length]
    return out / np.maximum(norm, 1e-8)


# ------------------------------------------------------------------------------------- noise (MCRA)
def mcra_noise_psd(power: np.ndarray, hop_s: float, *, alpha_s: float = 0.8, alpha_p: float = 0.2,
                   alpha_d: float = 0.95, delta: float = 5.0, min_window_s: float = 1.0,
                   b_min: float = 1.66) -> np.ndarray:
    """MCRA noise PSD estimate (Cohen & Berdugo 2002) from a noisy periodogram.

    Arguments
    ---------
    power : ``|Y|^2``, ``[B, F, N]``.
    hop_s : frame hop in seconds (converts ``min_window_s`` to frames).
    alpha_s, alpha_p, alpha_d : smoothing of the periodogram, of the speech-presence probability and of
        the noise PSD (the paper's values, tuned for an 8 ms hop).
    delta : ratio of smoothed power to its minimum above which a bin counts as speech.
    min_window_s : length of the minimum-tracking window.
    b_min : bias of the minimum of the smoothed periodogram w.r.t. the noise mean (initialisation only).

    Returns
    -------
    noise PSD ``[B, F, N]``; entry ``[..., l]`` uses frames ``< l`` (``l = 0``: the initial estimate).
    """
    B, F, N = power.shape
    # Frequency smoothing with a 3-tap Hann window, then first-order recursive smoothing over time.
    s_f = convolve1d(power, np.array([0.25, 0.5, 0.25]), axis=1, mode="nearest")
    s = lfilter([1 - alpha_s], [1, -alpha_s], s_f, axis=-1, zi=alpha_s * s_f[..., :1])[0]
    L = max(int(round(min_window_s / hop_s)), 1)
    # Causal sliding minimum over frames [l-L+1, l]: origin (L-1)//2 moves the window to the past.
    s_min = minimum_filter1d(s, size=L, axis=-1, mode="nearest", origin=(L - 1) // 2)
    present = (s > delta * np.maximum(s_min, _TINY)).astype(float)
    p = lfilter([1 - alpha_p], [1, -alpha_p], present, axis=-1, zi=np.zeros((B, F, 1)))[0]
    a_d = alpha_d + (1 - alpha_d) * p  # speech present -> hold the noise estimate

    noise = np.empty_like(power)
    lam = b_min * s_min[..., min(L, N) - 1]  # min over the first window, bias-compensated
    for l in range(N):  # inherently sequential; vectorised over batch and frequency
        noise[..., l] = lam
        lam = a_d[..., l] * lam + (1 - a_d[..., l]) * power[..., l]
    return noise


# --------------------------------------------------------------------------------------- front-end
def _enhance(noisy: np.ndarray, sr: int, frame_ms: float, noise_kw: dict,
             gain_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Shared pipeline: STFT -> MCRA noise PSD -> ``gain_fn(power, noise, hop_s)`` -> iSTFT."""
    x, shape, dtype = waveform_rows(noisy)
    T = shape[-1]
    if T == 0 or x.size == 0:
        return np.zeros(shape, dtype=dtype)
    n_fft, hop = _frame_params(sr, frame_ms)
    spec = _stft(x, n_fft, hop)
    power = spec.real ** 2 + spec.imag ** 2
    # Floor relative to the file's level: digital silence gives 0/0 otherwise.
    floor = 1e-12 * power.mean(axis=(1, 2), keepdims=True) + _TINY
    noise = np.maximum(mcra_noise_psd(power, hop / sr, **noise_kw), floor)
    gain = gain_fn(power, noise, hop / sr)
    out = _istft(spec * gain, n_fft, hop, T)
    return out.reshape(shape).astype(dtype, copy=False)


def _decision_directed(gamma: np.ndarray, gain_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       alpha: float, xi_min: float) -> np.ndarray:
    """Decision-directed a-priori SNR and gain, frame by frame (Ephraim & Malah 1984, eq. 51).

    ``xi(l) = alpha * G(l-1)^2 * gamma(l-1) + (1 - alpha) * max(gamma(l) - 1, 0)``, floored at ``xi_min``.
    ``gamma`` is the a-posteriori SNR ``[B, F, N]``; returns the gains ``[B, F, N]``.
    """
    gains = np.empty_like(gamma)
    prev = np.ones(gamma.shape[:-1])  # G^2 * gamma of the previous frame; 1 = the usual start value
    for l in range(gamma.shape[-1]):
        g_l = gamma[..., l]
        xi = np.maximum(alpha * prev + (1 - alpha) * np.maximum(g_l - 1, 0), xi_min)
        gains[..., l] = gain_of(xi, g_l)
        prev = gains[..., l] ** 2 * g_l
    return gains


# --------------------------------------------------------------------------------------- enhancers
def spectral_subtraction(noisy: np.ndarray, sr: int = 16000, *, alpha0: float = 4.0,
                         alpha_range: Tuple[float, float] = (1.0, 4.75), beta: float = 0.01,
                         frame_ms: float = 32.0, **noise_kw) -> np.ndarray:
    """Power spectral subtraction (Boll 1979) with Berouti et al.'s over-subtraction and floor.

    ``|S|^2 = max(|Y|^2 - alpha * N, beta * N)`` per bin, where ``N`` is the MCRA noise PSD and
    ``alpha = alpha0 - 3/20 * SNR_dB`` (the frame's a-posteriori SNR), clipped to ``alpha_range``:
    loud frames are subtracted gently, noise-dominated ones aggressively (less musical noise).

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``.
    sr : sample rate in Hz.
    alpha0, alpha_range : over-subtraction at 0 dB frame SNR and its limits.
    beta : spectral floor relative to the noise PSD (0.01 = -20 dB).
    frame_ms : STFT frame length (rounded to a power of two in samples; hop is a quarter of it).
    **noise_kw : passed to :func:`mcra_noise_psd`.

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``.
    """
    def gain(power: np.ndarray, noise: np.ndarray, hop_s: float) -> np.ndarray:
        snr_db = 10 * np.log10(power.sum(axis=1, keepdims=True) / noise.sum(axis=1, keepdims=True) + _TINY)
        alpha = np.clip(alpha0 - 0.15 * snr_db, *alpha_range)
        clean = np.maximum(power - alpha * noise, beta * noise)
        return np.sqrt(np.minimum(clean / np.maximum(power, _TINY), 1.0))

    return _enhance(noisy, sr, frame_ms, noise_kw, gain)


def wiener(noisy: np.ndarray, sr: int = 16000, *, alpha_dd: float = 0.98, xi_min_db: float = -25.0,
           frame_ms: float = 32.0, **noise_kw) -> np.ndarray:
    """Wiener filter ``G = xi / (1 + xi)`` with the decision-directed a-priori SNR ``xi``.

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``.
    sr : sample rate in Hz.
    alpha_dd : decision-directed weight on the previous frame's estimate.
    xi_min_db : a-priori SNR floor (limits residual musical noise, Cappé 1994).
    frame_ms : STFT frame length (hop is a quarter of it).
    **noise_kw : passed to :func:`mcra_noise_psd`.

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``.
    """
    def gain(power: np.ndarray, noise: np.ndarray, hop_s: float) -> np.ndarray:
        return _decision_directed(power / noise, lambda xi, g: xi / (1 + xi), alpha_dd, 10 ** (xi_min_db / 10))

    return _enhance(noisy, sr, frame_ms, noise_kw, gain)


def _lsa_gain(xi: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Ephraim & Malah (1985) eq. 20: ``G = xi/(1+xi) * exp(E1(v)/2)``, ``v = xi*gamma/(1+xi)``."""
    v = np.maximum(xi * gamma / (1 + xi), 1e-10)  # E1(0) = inf
    # Capped at 1: for gamma -> 0 the formula exceeds 1 and would only amplify near-empty bins.
    return np.minimum(xi / (1 + xi) * np.exp(0.5 * exp1(v)), 1.0)


def mmse_lsa(noisy: np.ndarray, sr: int = 16000, *, alpha_dd: float = 0.98, xi_min_db: float = -25.0,
             frame_ms: float = 32.0, **noise_kw) -> np.ndarray:
    """MMSE log-spectral amplitude estimator (Ephraim & Malah 1985) with decision-directed a-priori SNR.

    Arguments
    ---------
    noisy : waveform ``[time]`` or ``[..., time]`` at ``sr``.
    sr : sample rate in Hz.
    alpha_dd : decision-directed weight on the previous frame's estimate.
    xi_min_db : a-priori SNR floor (limits residual musical noise, Cappé 1994).
    frame_ms : STFT frame length (hop is a quarter of it).
    **noise_kw : passed to :func:`mcra_noise_psd`.

    Returns
    -------
    enhanced waveform, same shape and length as ``noisy``.
    """
    def gain(power: np.ndarray, noise: np.ndarray, hop_s: float) -> np.ndarray:
        return _decision_directed(power / noise, _lsa_gain, alpha_dd, 10 ** (xi_min_db / 10))

    return _enhance(noisy, sr, frame_ms, noise_kw, gain)


#: Name -> enhancer ``f(noisy [time], sr=16000, **params) -> [time]``: the classical enhancers above.
BASELINES: Dict[str, Callable[..., np.ndarray]] = {
    "spectral_subtraction": spectral_subtraction,
    "wiener": wiener,
    "mmse_lsa": mmse_lsa,
}
#: Every reference the quality benchmark can score: :data:`BASELINES`, then the peers of
#: :mod:`benchmarks.peers` (RNNoise, WebRTC NS, noisereduce; their packages are the ``peers`` extra,
#: imported when a peer first runs).
ENHANCERS: Dict[str, Callable[..., np.ndarray]] = {**BASELINES, **PEERS}
