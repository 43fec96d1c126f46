"""Validation without a clean reference, and example audio/spectrograms for TensorBoard.

Unpaired data often has no clean twin of any noisy recording, so PESQ/STOI cannot choose the checkpoint.
:class:`UpCycleBrain` then validates on held-out noisy files with two reference-free numbers:

- ``snr_gain`` (dB, higher is better; chooses the checkpoint): the blind SNR estimate of the enhanced file
  minus that of the noisy file, averaged over files. :func:`estimated_snr` takes the noise floor as a low
  percentile of the short-time frame powers (the pauses, where only noise is left) and the speech level as
  the mean power of the louder half of the frames, so it rises when the noise in the pauses goes down while
  the speech stays. It needs no model, no download and no reference.
- ``cycle_loss``: the L1 distance between a held-out noisy file and ``gen_c2n(gen_n2c(noisy))``. It goes
  up when the enhancer destroys what the noisy signal held (speech included), the failure that a pure
  noise-floor measure rewards; it is logged beside ``snr_gain`` as the guard to watch.

The limits are those of every blind SNR estimate: it cannot tell a removed noise from a removed quiet
syllable, so a model that gates hard scores well. Listen to the examples logged to TensorBoard
(:func:`log_examples`) before trusting a checkpoint chosen this way.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from speechbrain.utils.distributed import main_process_only

#: Frame and hop of the blind SNR estimate (32 ms / 16 ms at 16 kHz).
FRAME_SECONDS = 0.032
#: Percentile of the frame powers taken as the noise floor.
NOISE_PERCENTILE = 0.10
#: The estimate's range: powers below 1e-6 of the speech level count as 1e-6 (60 dB).
MAX_SNR_DB = 60.0


def estimated_snr(wav: torch.Tensor, sample_rate: int = 16000) -> float:
    """Blind SNR estimate of one signal in dB (see the module docstring).

    Arguments
    ---------
    wav : ``[time]`` float waveform.
    sample_rate : Hz, sets the frame length.

    Returns
    -------
    ``10 log10((speech - noise) / noise)``, within ``[-MAX_SNR_DB, MAX_SNR_DB]``; 0.0 for a silent signal.
    """
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    wav = wav.detach().double().flatten()
    if wav.numel() < frame:
        wav = torch.nn.functional.pad(wav, (0, frame - wav.numel()))
    power = wav.unfold(0, frame, max(1, frame // 2)).pow(2).mean(dim=-1).sort().values
    speech = float(power[power.numel() // 2:].mean())
    if speech <= 0.0:
        return 0.0
    floor = speech * 10 ** (-MAX_SNR_DB / 10)
    noise = max(float(torch.quantile(power, NOISE_PERCENTILE)), floor)
    return float(10 * torch.log10(torch.tensor(max(speech - noise, floor) / noise)))


def snr_gain(predict: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor,
             sample_rate: int = 16000) -> torch.Tensor:
    """Per-file ``estimated_snr(enhanced) - estimated_snr(noisy)`` in dB; a SpeechBrain ``MetricStats`` metric.

    Arguments
    ---------
    predict : ``[batch, time]`` enhanced waveforms.
    target : ``[batch, time]`` the noisy inputs they came from (not a clean reference).
    lengths : ``[batch]`` relative lengths (SpeechBrain's convention).

    Returns
    -------
    ``[batch]`` gains.
    """
    gains = []
    for enh, noi, rel in zip(predict, target, lengths):
        n = max(1, int(round(float(rel) * noi.shape[-1])))
        gains.append(estimated_snr(enh[:n], sample_rate) - estimated_snr(noi[:n], sample_rate))
    return torch.tensor(gains)


class ExampleCollector:
    """Keeps the first ``limit`` validation files of an epoch for :func:`log_examples`.

    Arguments
    ---------
    limit : how many files (0 keeps none).
    """

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.examples: List[Dict[str, object]] = []

    def add(self, ids, lengths: torch.Tensor, noisy: torch.Tensor, enhanced: torch.Tensor,
            clean: Optional[torch.Tensor] = None) -> None:
        """Takes files from a batch (``[batch, time]`` waveforms, ``[batch]`` relative lengths) until full."""
        for i, uid in enumerate(ids):
            if len(self.examples) >= self.limit:
                return
            n = max(1, int(round(float(lengths[i]) * noisy.shape[-1])))
            signals = {"noisy": noisy[i, :n], "enhanced": enhanced[i, :n]}
            if clean is not None:
                signals["clean"] = clean[i, :n]
            self.examples.append({"id": uid, "signals": {k: v.detach().float().cpu().clamp(-1, 1)
                                                         for k, v in signals.items()}})


@main_process_only
def log_examples(tensorboard_logger, examples: List[Dict[str, object]], sample_rate: int) -> None:
    """Writes each example's audios and spectrogram figure to TensorBoard, at the logger's current step.

    Tags: ``example<k>/noisy``, ``example<k>/enhanced``, ``example<k>/clean`` (when known) and
    ``example<k>/spectrogram`` (:func:`upcycle_se.plots.spectrogram_figure`, titled with the file's id).
    Main process only; call it on every process (SpeechBrain's loggers broadcast their result under DDP).
    """
    from upcycle_se.plots import spectrogram_figure

    for k, example in enumerate(examples):
        signals = example["signals"]
        for name, wav in signals.items():
            tensorboard_logger.log_audio(f"example{k}/{name}", wav.unsqueeze(0), sample_rate)
        figure = spectrogram_figure(signals, sample_rate, title=str(example["id"]))
        # add_figure closes the figure once drawn.
        tensorboard_logger.writer.add_figure(f"example{k}/spectrogram", figure, tensorboard_logger.global_step["meta"])
    tensorboard_logger.writer.flush()
