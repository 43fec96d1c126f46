"""Speech-quality measures as SpeechBrain ``MetricStats``: for the Brain's validation/test stages and standalone.

Two ways in:

- :class:`QualityStats` computes any set of measures per utterance in one pass (PESQ is computed once and
  reused by CSIG/CBAK/COVL), optionally in ``n_jobs`` processes with joblib, and summarises with NaN-aware
  means (see :mod:`upcycle_se.metrics.signals` for when a measure is NaN);
- the per-measure functions ``pesq_score``, ``stoi_score``, ... take ``(predict, target)`` in that order,
  as ``speechbrain.utils.metric_stats.MetricStats(metric=..., batch_eval=False, n_jobs=N)`` calls them.
  With ``n_jobs > 1`` SpeechBrain retries a batch forever when the metric raises, so these functions never
  raise on bad input: they warn and return NaN, which then shows in MetricStats' average.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from joblib import Parallel, delayed
from speechbrain.utils.metric_stats import MetricStats

from upcycle_se.errors import AudioError, UserError
from upcycle_se.metrics.composite_measures import composite
from upcycle_se.metrics.quality import pesq_aligned, stoi_aligned
from upcycle_se.metrics.signals import MAX_LEN_DIFF_S, MetricWarning, SignalLike, align_pair

#: Every measure QualityStats knows, in report order. ``ssnr`` is composite.m's segmental SNR (dB);
#: ``llr`` and ``wss`` are the composite measures' ingredients (lower is better).
ALL_METRICS = ("pesq", "stoi", "estoi", "csig", "cbak", "covl", "ssnr", "llr", "wss")
#: The columns of the paper's table (and of ``upcycle-se evaluate``'s CSV).
DEFAULT_METRICS = ("pesq", "stoi", "csig", "cbak", "covl", "ssnr")
#: The fields of ``speechbrain.utils.metric_stats.MetricStats.summarize``; QualityStats gives them for its
#: first metric.
METRICSTATS_FIELDS = ("average", "min_score", "min_id", "max_score", "max_id")
_COMPOSITE_KEYS = {"csig", "cbak", "covl", "ssnr", "llr", "wss"}

Batch = Union[torch.Tensor, np.ndarray, Sequence[SignalLike]]


def score_pair(ref: SignalLike, deg: SignalLike, metrics: Iterable[str] = DEFAULT_METRICS,
               max_len_diff_s: float = MAX_LEN_DIFF_S) -> Dict[str, float]:
    """The requested measures of ``deg`` against ``ref`` (``[time]`` at 16 kHz) in one pass.

    Returns
    -------
    ``{metric: value}`` in the order of ``metrics``; NaN (with a :class:`MetricWarning`) where undefined.

    Raises
    ------
    AudioError: invalid input (see :func:`upcycle_se.metrics.signals.align_pair`).
    ValueError: an unknown metric name.
    """
    metrics = check_metrics(metrics)
    ref, deg = align_pair(ref, deg, max_len_diff_s)
    out: Dict[str, float] = {}
    needs_pesq = "pesq" in metrics or {"csig", "cbak", "covl"} & set(metrics)
    pesq_value = pesq_aligned(ref, deg) if needs_pesq else math.nan
    comp = composite(ref, deg, pesq_score=pesq_value) if _COMPOSITE_KEYS & set(metrics) else {}
    for name in metrics:
        if name == "pesq":
            out[name] = pesq_value
        elif name in ("stoi", "estoi"):
            out[name] = stoi_aligned(ref, deg, extended=name == "estoi")
        else:
            out[name] = comp[name]
    return out


def check_metrics(metrics: Iterable[str]) -> Tuple[str, ...]:
    """Validates metric names (case-insensitive, no duplicates); returns them lower-cased, in order."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = tuple(m.lower() for m in metrics)
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"metrics must be distinct names among {', '.join(ALL_METRICS)}; got {list(metrics)}")
    return names


def score_pair_with_warnings(ref: np.ndarray, deg: np.ndarray, metrics: Tuple[str, ...],
                             max_len_diff_s: float) -> Tuple[Dict[str, float], List[str]]:
    """:func:`score_pair` that returns its :class:`MetricWarning` messages instead of emitting them, so a
    worker process can hand them to the parent to re-emit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricWarning)
        row = score_pair(ref, deg, metrics, max_len_diff_s)
    return row, [str(w.message) for w in caught if issubclass(w.category, MetricWarning)]


class QualityStats(MetricStats):
    """Per-utterance speech-quality measures of a model's output against the clean reference.

    Arguments
    ---------
    metrics : names among :data:`ALL_METRICS` (default PESQ and STOI; add "csig", "cbak", "covl",
        "ssnr", "estoi", "llr", "wss" as needed: the composite ones share one computation).
    n_jobs : processes used by :meth:`append` (joblib, like SpeechBrain's ``multiprocess_evaluation``);
        1 computes in this process.
    max_len_diff_s : tolerated length difference between a prediction and its target (both truncated).

    Example
    -------
    >>> stats = QualityStats(metrics=("pesq", "stoi"))
    >>> clean = torch.randn(2, 16000)
    >>> stats.append(["a", "b"], predict=clean, target=clean, lengths=torch.tensor([1.0, 0.5]))
    >>> round(stats.summarize("stoi"), 3)
    1.0
    """

    def __init__(self, metrics: Iterable[str] = ("pesq", "stoi"), n_jobs: int = 1,
                 max_len_diff_s: float = MAX_LEN_DIFF_S):
        self.metrics = check_metrics(metrics)
        if int(n_jobs) < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
        self.max_len_diff_s = max_len_diff_s
        super().__init__(metric=None, n_jobs=int(n_jobs), batch_eval=False)

    def clear(self) -> None:
        """Forgets every score (``self.scores`` holds one ``{metric: value}`` dict per id)."""
        self._scores: List[Dict[str, float]] = []
        self._ids: List[str] = []
        self._pending: List[tuple] = []  # (id, scoring job) not computed yet
        self.summary: Dict[str, float] = {}

    @property
    def scores(self) -> List[Dict[str, float]]:
        """One ``{metric: value}`` dict per appended utterance (computes what is still queued)."""
        self._flush()
        return self._scores

    @property
    def ids(self) -> List[str]:
        """The appended utterance ids, in order."""
        self._flush()
        return self._ids

    def append(self, ids: Sequence[str], predict: Batch, target: Batch,
               lengths: Optional[torch.Tensor] = None) -> None:
        """Scores a batch.

        Arguments
        ---------
        ids : ``[B]`` utterance ids.
        predict : enhanced waveforms ``[B, T]`` at 16 kHz (tensor/array), or a list of ``[T_i]`` signals.
        target : clean waveforms, same layout.
        lengths : ``[B]`` relative lengths (SpeechBrain's ``PaddedBatch`` convention); each pair is trimmed to
            ``round(length * T)`` samples before scoring, so padding is never scored.

        Raises
        ------
        AudioError: a prediction or target with NaN/inf samples (the message names the id), or a pair
        whose lengths differ by more than ``max_len_diff_s``.
        """
        preds, targets = _unbatch(predict, lengths), _unbatch(target, lengths)
        if not len(ids) == len(preds) == len(targets):
            raise ValueError(f"append: {len(ids)} ids, {len(preds)} predictions, {len(targets)} targets")
        for uid, p, t in zip(ids, preds, targets):  # checked here: a worker's error would lose the id
            for what, x in (("prediction", p), ("target", t)):
                if not np.isfinite(x).all():
                    raise AudioError(f"{uid}: {what} contains NaN or infinite samples")
        # (ref, deg) jobs are queued and scored in parallel chunks: a validation loop appends one
        # utterance at a time, which would leave every job but one idle.
        self._pending.extend((uid, (t, p, self.metrics, self.max_len_diff_s)) for uid, p, t in zip(ids, preds, targets))
        if self.n_jobs == 1 or len(self._pending) >= 8 * self.n_jobs:
            self._flush()

    def _flush(self) -> None:
        """Scores the queued utterances (``n_jobs`` processes when there are several)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        jobs = [job for _, job in pending]
        if self.n_jobs == 1 or len(jobs) == 1:
            results = [score_pair_with_warnings(*job) for job in jobs]
        else:
            results = Parallel(n_jobs=self.n_jobs)(delayed(score_pair_with_warnings)(*job) for job in jobs)
        for (uid, _), (row, messages) in zip(pending, results):
            for msg in messages:
                warnings.warn(f"{uid}: {msg}", MetricWarning, stacklevel=2)
            self._ids.append(uid)
            self._scores.append(row)

    def describe(self) -> Dict[str, Dict[str, float]]:
        """``{metric: {"mean", "std", "n", "n_nan"}}`` over the appended utterances (NaN values skipped;
        ``std`` is the sample standard deviation, ddof=1)."""
        return describe_rows(self.scores, self.metrics)

    def summarize(self, field: Optional[str] = None) -> Union[float, str, None, Dict[str, float]]:
        """Means per metric over the appended utterances, skipping NaN values (with a warning saying how many).

        Arguments
        ---------
        field : one metric name: return only its mean. Or one of SpeechBrain ``MetricStats``' fields
            (:data:`METRICSTATS_FIELDS`: ``average``, ``min_score``, ``min_id``, ``max_score``,
            ``max_id``), which describe the *first* metric (e.g. PESQ), over its finite values.

        Returns
        -------
        ``{metric: mean}``, or one value with ``field``. NaN for a metric with no finite value (and
        ``None`` for ``min_id``/``max_id`` then).

        Raises
        ------
        KeyError: ``field`` is neither one of this object's metrics nor a ``MetricStats`` field, as
        ``MetricStats.summarize`` raises for an unknown field.
        """
        if field is not None and field not in self.metrics and field not in METRICSTATS_FIELDS:
            raise KeyError(f"{field!r} is neither among this QualityStats' metrics {self.metrics} "
                           f"nor a MetricStats field {METRICSTATS_FIELDS}")
        stats = self.describe()
        for name, s in stats.items():
            if s["n_nan"]:
                warnings.warn(f"{name}: {s['n_nan']} of {s['n'] + s['n_nan']} utterances undefined (NaN), "
                              "left out of the mean", MetricWarning, stacklevel=2)
        self.summary = {name: s["mean"] for name, s in stats.items()}
        if field in METRICSTATS_FIELDS:
            return self._metricstats_summary()[field]
        return self.summary[field] if field is not None else dict(self.summary)

    def _metricstats_summary(self) -> Dict[str, Union[float, str, None]]:
        """``MetricStats.summarize()``'s dict for the first metric, NaN scores left out."""
        values = np.array([row[self.metrics[0]] for row in self.scores], dtype=np.float64)
        finite = np.flatnonzero(np.isfinite(values))
        if not finite.size:
            return {"average": math.nan, "min_score": math.nan, "min_id": None, "max_score": math.nan,
                    "max_id": None}
        lo, hi = finite[np.argmin(values[finite])], finite[np.argmax(values[finite])]
        return {"average": float(values[finite].mean()), "min_score": float(values[lo]), "min_id": self.ids[lo],
                "max_score": float(values[hi]), "max_id": self.ids[hi]}

    def write_stats(self, filestream, verbose: bool = False) -> None:
        """Writes a mean ± std table (one line per metric) to ``filestream`` (and stdout if ``verbose``)."""
        text = format_table({"": self.describe()}) + "\n"
        filestream.write(text)
        if verbose:
            print(text, end="")

    def write_csv(self, path: Union[str, os.PathLike]) -> None:
        """Writes one row per utterance, columns ``file,<metric>...`` (NaN as ``nan``); atomically."""
        rows = [[uid] + [format_score(row[m]) for m in self.metrics] for uid, row in zip(self.ids, self.scores)]
        write_csv_atomic(path, ["file", *self.metrics], rows)


# --- per-metric functions for speechbrain's MetricStats(metric=..., batch_eval=False) ----------------

def _single(name: str) -> Callable[[SignalLike, SignalLike], float]:
    def fn(predict: SignalLike, target: SignalLike) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)  # per-utterance noise; NaNs show in the average
            try:
                return float(score_pair(target, predict, (name,))[name])
            except UserError as err:
                warnings.warn(f"{name}: {err}; scored NaN", MetricWarning, stacklevel=2)
                return math.nan

    fn.__name__ = fn.__qualname__ = f"{name}_score"
    fn.__doc__ = (f"{name.upper()} of ``predict`` against ``target`` (``[time]`` at 16 kHz), in MetricStats' "
                  "argument order; NaN when undefined or invalid.")
    return fn


pesq_score = _single("pesq")
stoi_score = _single("stoi")
estoi_score = _single("estoi")
csig_score = _single("csig")
cbak_score = _single("cbak")
covl_score = _single("covl")
ssnr_score = _single("ssnr")
#: name -> ``f(predict, target) -> float`` for ``MetricStats(metric=METRIC_FUNCTIONS[name], batch_eval=False)``.
METRIC_FUNCTIONS = {"pesq": pesq_score, "stoi": stoi_score, "estoi": estoi_score, "csig": csig_score,
                    "cbak": cbak_score, "covl": covl_score, "ssnr": ssnr_score}


# --- helpers shared with the folder evaluator ----------------------------------------------------------

def describe_rows(rows: Sequence[Dict[str, float]], metrics: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{metric: {"mean", "std", "n", "n_nan"}}`` over score dicts, NaN skipped, std with ddof=1."""
    out = {}
    for name in metrics:
        values = np.array([row[name] for row in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[name] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "n": int(finite.size),
            "n_nan": int(values.size - finite.size),
        }
    return out


def format_table(columns: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """A plain-text table: one row per metric, one ``mean ± std`` column per entry of ``columns``.

    ``columns`` maps a column title (e.g. "enhanced", "noisy") to :meth:`QualityStats.describe` output.
    Cells with skipped NaN values say how many values the mean used.
    """
    titles = list(columns)
    metrics = list(next(iter(columns.values()))) if columns else []
    cells = [["metric"] + titles]
    for m in metrics:
        row = [m.upper() + (" (dB)" if m == "ssnr" else "")]
        for t in titles:
            s = columns[t][m]
            cell = "nan" if math.isnan(s["mean"]) else f"{s['mean']:.3f}"
            if not math.isnan(s["std"]):
                cell += f" ± {s['std']:.3f}"
            if s["n_nan"]:
                cell += f" (n={s['n']}, {s['n_nan']} NaN)"
            row.append(cell)
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def write_csv_atomic(path: Union[str, os.PathLike], header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Writes a CSV to a temporary file beside ``path``, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_score(value: float) -> str:
    """A score as a CSV/table cell: 6 significant digits, ``nan`` for an undefined one."""
    return "nan" if value is None or math.isnan(value) else f"{value:.6g}"


def _unbatch(batch: Batch, lengths: Optional[torch.Tensor]) -> List[np.ndarray]:
    """``[B, T]`` (or a list of ``[T_i]``) -> list of float32 numpy ``[T_i]``, trimmed by relative lengths."""
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        if batch.ndim != 2:
            raise ValueError(f"expected a [batch, time] batch, got shape {tuple(batch.shape)}")
        items = list(batch)
    else:
        items = list(batch)
    arrays = [x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in items]
    if lengths is None:
        return arrays
    rel = lengths.detach().cpu().double().numpy() if isinstance(lengths, torch.Tensor) else np.asarray(lengths)
    if len(rel) != len(arrays):
        raise ValueError(f"{len(rel)} lengths for a batch of {len(arrays)}")
    # relative to the padded length, i.e. the longest signal of the batch (SpeechBrain's convention)
    total = max(x.shape[-1] for x in arrays)
    return [x[: int(round(r * total))] for x, r in zip(arrays, rel)]
