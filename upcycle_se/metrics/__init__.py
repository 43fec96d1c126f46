"""Speech-quality measures: wide-band PESQ, (E)STOI, CSIG/CBAK/COVL (Hu & Loizou 2008), segmental SNR.

Per-signal functions take ``(ref, deg)``: 1-D float (or int PCM) arrays/tensors at 16 kHz. Invalid input
raises :class:`upcycle_se.errors.AudioError`; a measure undefined on valid input (silence, too short)
is NaN with a :class:`MetricWarning` (see :mod:`upcycle_se.metrics.signals`).

- :func:`pesq_wb`, :func:`stoi` (``extended=True`` for ESTOI), :func:`composite`, :func:`ssnr`,
  :func:`llr`, :func:`wss`, :func:`composite_from_measures`, :func:`score_pair`;
- :class:`QualityStats`: a SpeechBrain ``MetricStats`` computing several measures per utterance at once;
- ``pesq_score``, ``stoi_score``, ... (``(predict, target)`` order) for SpeechBrain's plain ``MetricStats``;
- :func:`evaluate_folders`: score a folder of enhanced files against a folder of clean ones.
"""
from upcycle_se.metrics.composite_measures import composite, composite_from_measures, llr, ssnr, wss
from upcycle_se.metrics.folders import FolderEvaluation, evaluate_folders, match_files
from upcycle_se.metrics.quality import pesq_wb, stoi
from upcycle_se.metrics.signals import MAX_LEN_DIFF_S, SAMPLE_RATE, MetricWarning
from upcycle_se.metrics.stats import (
    ALL_METRICS,
    DEFAULT_METRICS,
    METRIC_FUNCTIONS,
    QualityStats,
    cbak_score,
    covl_score,
    csig_score,
    estoi_score,
    pesq_score,
    score_pair,
    ssnr_score,
    stoi_score,
)

__all__ = [
    "ALL_METRICS", "DEFAULT_METRICS", "MAX_LEN_DIFF_S", "METRIC_FUNCTIONS", "SAMPLE_RATE",
    "FolderEvaluation", "MetricWarning", "QualityStats",
    "cbak_score", "composite", "composite_from_measures", "covl_score", "csig_score", "estoi_score",
    "evaluate_folders", "llr", "match_files", "pesq_score", "pesq_wb", "score_pair", "ssnr", "ssnr_score",
    "stoi", "stoi_score", "wss",
]
