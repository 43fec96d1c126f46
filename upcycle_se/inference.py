"""Enhancing recordings with a trained Up-Cycle-SENet generator.

:class:`UpCycleEnhancement` is a SpeechBrain :class:`~speechbrain.inference.interfaces.Pretrained`
interface loaded from a local *model folder*: ``hyperparams.yaml`` and ``generator.ckpt`` (the
noisy->clean generator's state_dict), made by :func:`upcycle_se.export.export_model`
(``upcycle-se export``). The same folder also loads with SpeechBrain's stock
:class:`~speechbrain.inference.enhancement.WaveformEnhancement`: its module ``enhance_model`` is an
:class:`EnhanceModel`.

Files of any rate, channel count and sample format are enhanced at 16 kHz and written back at their own
rate, channel count, length and (where the format allows it) subtype. Long files are streamed in chunks
cross-faded with raised-cosine ramps, so memory does not grow with the file's length: the chunking is
:mod:`upcycle_se.streaming`'s, the file reading and writing :mod:`upcycle_se.audio`'s.

Python and command-line use
---------------------------
Python::

    from upcycle_se.inference import UpCycleEnhancement

    enhancer = UpCycleEnhancement.from_hparams(source="models/upcycle-small",
                                               run_opts={"device": "cpu", "precision": "auto"})
    clean = enhancer.enhance_file("noisy.flac", output_filename="clean.flac")  # [time] at the file's rate
    batch = enhancer.enhance_batch(noisy_16k)  # [batch, time] at 16 kHz -> [batch, time]

Command line::

    upcycle-se export --checkpoint results/upcycle/1986 --out models/upcycle-small   # best CKPT by PESQ
    upcycle-se enhance noisy/ talk.mp3 -o enhanced/ --model models/upcycle-small
    upcycle-se enhance meeting.wav -o enhanced/ --channels downmix --chunk-seconds 4 --device cuda
    upcycle-se enhance noisy/ -o enhanced/ --precision fp32   # default auto: bf16 on bf16 hardware
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import FetchConfig, FetchFrom, FetchSource, LocalStrategy

from upcycle_se.audio import AtomicWriter, FileSource, output_format, read_audio, resample_audio
from upcycle_se.errors import ConfigError, UserError, first_line
# check_chunking and plan_chunks lived here before upcycle_se.streaming; callers still import them from here.
from upcycle_se.streaming import CHANNEL_MODES, TensorSource, check_chunking, overlap_add, plan_chunks

PathLike = Union[str, os.PathLike]

#: Files every model folder holds.
HPARAMS_FILE = "hyperparams.yaml"
GENERATOR_FILE = "generator.ckpt"
# Prefixes DDP / torch.compile wrappers add to state_dict keys.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


#: Packaged models, by the name ``upcycle-se enhance --model`` and :func:`packaged_model_dir` take, and the
#: folder under ``upcycle_se/pretrained/`` each name means. ``default`` is the best packaged model (the
#: model cards, ``MODEL.md``, give the figures that chose it); ``unpaired`` the best one trained unpaired.
PACKAGED_MODELS: Dict[str, str] = {"default": "base_selfbabble_add_real", "unpaired": "base_unpaired_selfbabble",
                                   "small": "small"}


def packaged_model_dir(name: str = "default") -> Path:
    """The folder of packaged model ``name`` (see :data:`PACKAGED_MODELS`); it may not exist (a checkout
    without it). An unknown name is a one-line :class:`UserError` listing the names."""
    if name not in PACKAGED_MODELS:
        raise UserError(f"unknown packaged model {name!r}; packaged: {', '.join(PACKAGED_MODELS)} "
                        "(or give a model folder made by `upcycle-se export`)")
    return Path(__file__).resolve().parent / "pretrained" / PACKAGED_MODELS[name]


def default_model_dir() -> Path:
    """The default packaged model's folder (``packaged_model_dir("default")``); it may not exist."""
    return packaged_model_dir("default")


# ------------------------------------------------------------------------------------------ interface
class EnhanceModel(torch.nn.Module):
    """A generator as SpeechBrain's ``WaveformEnhancement`` calls its ``enhance_model`` module.

    ``forward(noisy)``: ``[batch, time]`` -> (enhanced ``[batch, time]``, output spectrum
    ``[batch, 2, freq, frames]``), the ``(waveform, extra)`` pair ``WaveformEnhancement.enhance_batch``
    unpacks. The generator is a sub-module, so its state_dict loads into ``generator`` unchanged.
    ``max_attenuation_db`` is the model folder's attenuation limit, set on the generator here so that stock
    SpeechBrain applies it too (None: no limit).
    """

    def __init__(self, generator: torch.nn.Module, max_attenuation_db: Optional[float] = None):
        super().__init__()
        self.generator = generator
        if max_attenuation_db is not None:
            from upcycle_se.models.attenuation import set_max_attenuation_db

            set_max_attenuation_db(generator, max_attenuation_db)

    def forward(self, noisy: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.generator(noisy, return_spec=True)


class UpCycleEnhancement(Pretrained):
    """Up-Cycle-SENet speech enhancement (noisy -> clean generator) as a SpeechBrain pretrained model.

    Load a model folder (see :func:`upcycle_se.export.export_model`) with
    ``UpCycleEnhancement.from_hparams(source=folder)``, which reads local files only and never asks
    HuggingFace. Needed: module ``enhance_model`` (an :class:`EnhanceModel`, or any module mapping a
    waveform ``[batch, time]`` at ``sample_rate`` to ``[batch, time]`` or to a tuple starting with it;
    folders exported before it existed name it ``generator``) and hparam ``sample_rate``; optional
    defaults ``chunk_seconds``, ``overlap_seconds``, ``batch_size`` (chunks per forward pass).

    Precision: SpeechBrain's ``precision`` run option (``run_opts={"precision": ...}``, or a ``precision``
    hparam), with ``auto`` (the default) added: ``auto`` is bf16 where the hardware computes bf16 (CPU
    with AMX or AVX512-BF16, CUDA with bf16) and fp32 elsewhere; see
    :func:`upcycle_se.models.runtime.resolve_precision`. Instead of SpeechBrain's autocast, bf16 runs the
    generator's U-Net in bf16 weights and feature maps (:meth:`UpCycleGenerator.set_unet_dtype`), with the
    STFT/iSTFT, mask and waveform in fp32. :attr:`precision` is what was resolved (``fp32`` or ``bf16``);
    :meth:`set_precision` changes it.

    Attenuation limit: ``max_attenuation_db`` (a run option, an hparam of the model folder, or an
    ``overrides`` entry of :meth:`from_hparams`; :meth:`set_max_attenuation_db` changes it) floors the
    generator's mask gain at ``10 ** (-db / 20)``, as DeepFilterNet's attenuation limit: no bin loses more
    than ``db`` dB. None, the default, is no limit (:mod:`upcycle_se.models.attenuation`).

    Compilation (opt-in): SpeechBrain's ``compile`` run option (``run_opts={"compile": True}``) wraps the
    model in ``torch.compile``; here it runs with inductor's ``freezing`` (weights folded in as constants,
    oneDNN weight prepacking), which is what lets bf16 pay off on CPU (``benchmarks/speed.py``). The first
    pass of each new input shape compiles (a minute or more on a 2-core CPU); SpeechBrain's default static
    shapes hold up to torch's recompile limit, beyond which new shapes run eagerly.

    Example
    -------
    >>> enhancer = UpCycleEnhancement.from_hparams(source="models/upcycle-small")  # doctest: +SKIP
    >>> enhanced = enhancer.enhance_file("noisy.wav", output_filename="enhanced.wav")  # doctest: +SKIP
    """

    MODULES_NEEDED = ["enhance_model"]
    HPARAMS_NEEDED = ["sample_rate"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        # SpeechBrain would turn `precision` into an autocast context (and refuses "auto"): take it here.
        requested, run_opts, hparams = _take_precision(run_opts, hparams)
        # Not a SpeechBrain run option either: taken here, applied to the generator once it is built.
        attenuation, run_opts, hparams = _take_option("max_attenuation_db", run_opts, hparams)
        from upcycle_se.models.attenuation import check_max_attenuation_db

        attenuation = check_max_attenuation_db(attenuation)  # a bad value fails before the model loads
        super().__init__(modules=modules, hparams=hparams, run_opts=run_opts, freeze_params=freeze_params)
        names = [name for name in ("enhance_model", "generator") if name in self.mods]
        if not names:
            raise ConfigError("the model's hyperparams define no 'enhance_model' module")
        self._model_name = names[0]
        self.sample_rate = int(self.hparams.sample_rate)
        if self.sample_rate <= 0:
            raise ConfigError(f"the model's sample_rate must be positive, got {self.hparams.sample_rate}")
        self.chunk_seconds = float(getattr(self.hparams, "chunk_seconds", 4.0))
        self.overlap_seconds = float(getattr(self.hparams, "overlap_seconds", 0.5))
        self.batch_size = int(getattr(self.hparams, "batch_size", 4))
        self._resamplers: Dict[Tuple[int, int], torch.nn.Module] = {}
        self._fp32_state: Optional[Dict[str, torch.Tensor]] = None
        self.precision = "fp32"
        self.set_precision(requested)
        # The folder's limit (its `max_attenuation_db` hparam, already set on the generator by EnhanceModel),
        # or the run option's, which overrides it ("none": no limit).
        self.max_attenuation_db: Optional[float] = None
        self.set_max_attenuation_db(attenuation)

    @property
    def compiled(self) -> bool:
        """Whether the model runs through ``torch.compile`` (the ``compile`` run option)."""
        return hasattr(self.mods[self._model_name], "_orig_mod")

    def set_precision(self, precision: str = "auto") -> str:
        """Runs the generator in ``precision`` (``auto``, ``fp32`` or ``bf16``); returns the resolved name.

        ``auto`` gives bf16 only on hardware with bf16 arithmetic, so it is never the slow emulated path.
        Going back to fp32 restores the float32 weights exactly (a copy is kept while in bf16).

        Raises
        ------
        ConfigError: an unknown ``precision``, or ``bf16`` for a model that has no bf16 path (a module that
        is not an :class:`~upcycle_se.models.UpCycleGenerator` inside).
        """
        from upcycle_se.models.runtime import resolve_precision

        dtype = resolve_precision(precision, self.device)
        generators = self._generators()
        if dtype == torch.bfloat16 and not generators:
            if str(precision).strip().lower() == "auto":
                dtype = torch.float32
            else:
                raise ConfigError("precision bf16 needs an Up-Cycle-SENet generator in the model; this one has none")
        model = self.mods[self._model_name]
        if dtype == torch.bfloat16 and self._fp32_state is None:
            self._fp32_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        changed = self.precision != ("bf16" if dtype == torch.bfloat16 else "fp32")
        for gen in generators:
            gen.set_unet_dtype(dtype)
        if dtype == torch.float32 and self._fp32_state is not None:
            model.load_state_dict(self._fp32_state)  # exact float32 weights back, not bf16-rounded ones
            self._fp32_state = None
        if changed and self.compiled:
            # Frozen graphs hold the old weights as constants and their guards do not see the new dtype:
            # drop torch.compile's caches (process-wide) so that the next pass compiles afresh.
            torch._dynamo.reset()
        self.precision = "bf16" if dtype == torch.bfloat16 else "fp32"
        return self.precision

    def set_max_attenuation_db(self, db: Optional[float]) -> Optional[float]:
        """Floors the mask gain of the model's generator at ``10 ** (-db / 20)`` (None: no limit); returns ``db``.

        Arguments
        ---------
        db : the largest attenuation, in dB, any time-frequency bin may get (>= 0; 0 keeps the input's
            magnitudes), or None.

        Raises
        ------
        ConfigError: a negative, NaN or infinite ``db``, or a limit for a model with no masking generator.
        """
        from upcycle_se.models.attenuation import check_max_attenuation_db, set_max_attenuation_db

        db = check_max_attenuation_db(db)
        set_max_attenuation_db(self.mods[self._model_name], db)
        if db != self.max_attenuation_db and self.compiled:
            torch._dynamo.reset()  # the compiled graphs hold the old floor as a constant
        self.max_attenuation_db = db
        return db

    def _generators(self) -> list:
        """The generators inside the model that have a bf16 path (a ``set_unet_dtype`` method)."""
        return [m for m in self.mods[self._model_name].modules() if callable(getattr(m, "set_unet_dtype", None))]

    @classmethod
    def from_hparams(cls, source: PathLike, hparams_file: str = HPARAMS_FILE, savedir: Optional[PathLike] = None,
                     **kwargs) -> "UpCycleEnhancement":
        """Loads a local model folder, with no network access.

        Arguments
        ---------
        source : the model folder (``hyperparams.yaml`` + ``generator.ckpt``); a path, never a hub id.
        hparams_file : the hyperparameters file in it.
        savedir : where SpeechBrain links the files (symlinks); None reads them in place, writing nothing.
        **kwargs : for :func:`speechbrain.inference.interfaces.pretrained_from_hparams`, e.g.
            ``run_opts={"device": "cuda", "precision": "bf16"}``, ``overrides={"chunk_seconds": 8}``.

        Raises
        ------
        UserError: the folder or one of its files is missing; ConfigError: it does not load.
        """
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(f"{folder}: no such model folder (make one with `upcycle-se export`)")
        missing = [name for name in (hparams_file, GENERATOR_FILE) if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder}: not a model folder, missing {' and '.join(missing)} "
                            "(make one with `upcycle-se export`)")
        # A FetchSource marked LOCAL keeps SpeechBrain's fetch from ever reading the path as a hub id;
        # overwrite re-links savedir so it never serves files from an older export.
        overrides = kwargs.get("overrides")
        if isinstance(overrides, dict) and "max_attenuation_db" in overrides:
            # Model folders need not have the key (SpeechBrain's overrides must match): a run option instead.
            overrides = dict(overrides)
            run_opts = dict(kwargs.get("run_opts") or {})
            run_opts.setdefault("max_attenuation_db", overrides.pop("max_attenuation_db"))
            kwargs.update(overrides=overrides, run_opts=run_opts)
        kwargs.setdefault("local_strategy", LocalStrategy.SYMLINK)
        kwargs.setdefault("fetch_config", FetchConfig(allow_network=False, overwrite=True))
        try:
            return super().from_hparams(source=FetchSource(FetchFrom.LOCAL, str(folder.resolve())),
                                        hparams_file=hparams_file, savedir=savedir, **kwargs)
        except UserError:
            raise
        except Exception as err:
            raise ConfigError(f"{folder}: cannot load the model ({type(err).__name__}: {first_line(err)})") from err

    # ------------------------------------------------------------------------------- model rate
    def enhance_batch(self, noisy: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Enhances a batch at the model's rate in one pass (no chunking).

        Arguments
        ---------
        noisy : ``[batch, time]`` waveforms at ``self.sample_rate``.
        lengths : ``[batch]`` relative lengths (SpeechBrain convention); each signal is then enhanced on
            its own valid part, so padding never leaks into it, and the padding comes back as zeros.

        Returns
        -------
        ``[batch, time]`` enhanced waveforms on ``self.device``.
        """
        if noisy.dim() != 2:
            raise ValueError(f"enhance_batch expects [batch, time], got shape {tuple(noisy.shape)}")
        noisy = noisy.to(self.device, torch.float32)
        n = noisy.shape[1]
        if lengths is None:
            return self._generate(noisy)
        abs_lens = (lengths.float().cpu() * n).round().long().clamp(1, n).tolist()
        if all(k == n for k in abs_lens):
            return self._generate(noisy)
        out = torch.zeros_like(noisy)
        for i, k in enumerate(abs_lens):
            out[i, :k] = self._generate(noisy[i: i + 1, :k])[0]
        return out

    def forward(self, noisy: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Same as :meth:`enhance_batch`."""
        return self.enhance_batch(noisy, lengths)

    def load_audio(self, path: PathLike, savedir: Optional[PathLike] = None) -> torch.Tensor:
        """Reads a local file as the model's input: ``[time]`` mono (channels averaged) at
        ``self.sample_rate`` on ``self.device``, via soundfile (SpeechBrain's loader needs torchcodec)."""
        del savedir  # local files only
        sig, sr = read_audio(path, allow_multichannel=True)
        return resample_audio(sig.mean(dim=0), sr, self.sample_rate).to(self.device)

    # ---------------------------------------------------------------------------------- any rate
    def enhance_signal(self, signal: Union[torch.Tensor, np.ndarray], sample_rate: int, *,
                       channels: str = "each", chunk_seconds: Optional[float] = None,
                       overlap_seconds: Optional[float] = None, batch_size: Optional[int] = None) -> torch.Tensor:
        """Enhances an in-memory signal at any rate (chunked, see :meth:`enhance_to_file`).

        Arguments
        ---------
        signal : ``[time]`` or ``[channels, time]`` float waveform at ``sample_rate``.

        Returns
        -------
        float32 CPU tensor at ``sample_rate``, same length: ``[time]`` for ``[time]`` input, else
        ``[channels, time]`` (``[1, time]`` with ``channels="downmix"``).
        """
        sig = torch.as_tensor(signal, dtype=torch.float32).detach().cpu()
        if sig.dim() not in (1, 2) or sig.shape[-1] == 0:
            raise ValueError(f"expected a non-empty [time] or [channels, time] signal, got {tuple(sig.shape)}")
        blocks: List[torch.Tensor] = []
        self._run(TensorSource(sig if sig.dim() == 2 else sig[None], sample_rate), blocks.append,
                  channels, chunk_seconds, overlap_seconds, batch_size)
        out = torch.cat(blocks, dim=1)
        return out[0] if sig.dim() == 1 else out

    def enhance_file(self, filename: PathLike, output_filename: Optional[PathLike] = None, *,
                     channels: str = "each", chunk_seconds: Optional[float] = None,
                     overlap_seconds: Optional[float] = None, batch_size: Optional[int] = None) -> torch.Tensor:
        """Enhances an audio file (any soundfile format, rate, channel count), like SpeechBrain's.

        Arguments
        ---------
        filename : the noisy file.
        output_filename : if given, the enhanced audio is also written there, atomically, at the input's
            rate and channel count, in the extension's format (the input's subtype where it fits).
        channels : ``each`` (enhance every channel) or ``downmix`` (average them first; mono result).
        chunk_seconds, overlap_seconds, batch_size : chunking (defaults from the model's hparams;
            ``chunk_seconds=0`` enhances the whole file at once).

        Returns
        -------
        float32 CPU tensor at the file's rate, same length: ``[time]`` for mono files and downmix,
        ``[channels, time]`` otherwise. Use :meth:`enhance_to_file` for long files: it keeps nothing.
        """
        blocks: List[torch.Tensor] = []
        self._file_to_sinks(Path(filename), output_filename, blocks.append, channels, chunk_seconds,
                            overlap_seconds, batch_size)
        out = torch.cat(blocks, dim=1)
        return out[0] if out.shape[0] == 1 else out

    def enhance_to_file(self, filename: PathLike, output_filename: PathLike, *, channels: str = "each",
                        chunk_seconds: Optional[float] = None, overlap_seconds: Optional[float] = None,
                        batch_size: Optional[int] = None) -> Path:
        """Enhances ``filename`` into ``output_filename`` streaming, in memory independent of its length.

        Same arguments as :meth:`enhance_file`. The output is written to a hidden ``.part`` file in the
        output folder and renamed into place when complete. Returns the output path.

        Raises
        ------
        AudioError: the input is missing, unreadable, empty, truncated or non-finite, or the output
        extension is not a format soundfile writes.
        """
        out = Path(output_filename)
        self._file_to_sinks(Path(filename), out, None, channels, chunk_seconds, overlap_seconds, batch_size)
        return out

    # ------------------------------------------------------------------------------- internals
    def _file_to_sinks(self, path: Path, output: Optional[PathLike], collect: Optional[Callable], channels: str,
                       chunk_seconds: Optional[float], overlap_seconds: Optional[float],
                       batch_size: Optional[int]) -> None:
        """Streams ``path`` through the model into a writer for ``output`` and/or ``collect``."""
        if channels not in CHANNEL_MODES:
            raise ConfigError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {channels!r}")
        source = FileSource(path)
        writer = None
        try:
            if output is not None:
                out = Path(output)
                fmt, subtype = output_format(out, source.format, source.subtype, path.suffix)
                writer = AtomicWriter(out, source.sample_rate, source.channels if channels == "each" else 1,
                                       fmt, subtype)

            def sink(block: torch.Tensor) -> None:
                if writer is not None:
                    writer(block)
                if collect is not None:
                    collect(block)

            self._run(source, sink, channels, chunk_seconds, overlap_seconds, batch_size)
            if writer is not None:
                writer.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            source.close()

    def _run(self, source, sink: Callable[[torch.Tensor], None], channels: str,
             chunk_seconds: Optional[float], overlap_seconds: Optional[float], batch_size: Optional[int]) -> None:
        """Chunked overlap-add enhancement of ``source`` at its own rate.

        Each chunk is resampled to the model's rate, enhanced, resampled back and windowed
        (:func:`upcycle_se.streaming.overlap_add`); ``sink`` receives the finished output in order as
        ``[out_channels, n]`` float32 CPU blocks. Memory holds one batch of chunks (``batch_size`` x
        channels x chunk length), whatever the source's length.
        """
        if channels not in CHANNEL_MODES:
            raise ConfigError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {channels!r}")
        batch_size = int(self.batch_size if batch_size is None else batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        sr, total = int(source.sample_rate), int(source.frames)
        plan = plan_chunks(total, sr, self.chunk_seconds if chunk_seconds is None else float(chunk_seconds),
                           self.overlap_seconds if overlap_seconds is None else float(overlap_seconds),
                           self.sample_rate)
        overlap_add(source, sink, plan, channels, batch_size, lambda x: self._enhance_at_rate(x, sr))

    def _enhance_at_rate(self, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``[n, L]`` at ``sample_rate`` -> resample -> generator -> resample back -> ``[n, L]`` on CPU."""
        length = x.shape[-1]
        x = x.to(self.device)
        if sample_rate != self.sample_rate:
            x = self._resampler(sample_rate, self.sample_rate)(x)
        y = self._generate(x)
        if sample_rate != self.sample_rate:
            y = self._resampler(self.sample_rate, sample_rate)(y)
        # Exact for chunks of whole resampling periods; a short, odd-length signal comes back a sample long.
        y = y[..., :length] if y.shape[-1] >= length else F.pad(y, (0, length - y.shape[-1]))
        return y.float().cpu()

    def _generate(self, wav: torch.Tensor) -> torch.Tensor:
        """Runs the generator on ``[n, T]`` at the model rate -> ``[n, T]`` float32."""
        freezing = contextlib.nullcontext()
        if self.compiled:
            import torch._inductor.config as inductor_config

            freezing = inductor_config.patch(freezing=True)
        with torch.no_grad(), self.inference_ctx, freezing:
            out = self.mods[self._model_name](wav)
        if isinstance(out, (tuple, list)):  # EnhanceModel's (wav, spec), as WaveformEnhancement wants it
            out = out[0]
        if out.shape != wav.shape:
            raise ConfigError(f"the generator returned shape {tuple(out.shape)} for input {tuple(wav.shape)}")
        return out.float()

    def _resampler(self, orig: int, new: int) -> torch.nn.Module:
        """Cached sinc resampler (same filter as :func:`upcycle_se.audio.resample_audio`)."""
        key = (orig, new)
        if key not in self._resamplers:
            self._resamplers[key] = AT.Resample(orig, new).to(self.device)
        return self._resamplers[key]


def _take_precision(run_opts, hparams) -> Tuple[str, Optional[dict], Optional[dict]]:
    """Splits the ``precision`` run option / hparam off (run option first; default ``auto``).

    Returns ``(precision, run_opts, hparams)`` with the rest unchanged, for ``Pretrained.__init__``.
    """
    requested, run_opts, hparams = _take_option("precision", run_opts, hparams)
    return ("auto" if requested is None else str(requested)), run_opts, hparams


def _take_option(name: str, run_opts, hparams) -> Tuple[object, Optional[dict], Optional[dict]]:
    """Splits the run option / hparam ``name`` off (the run option first; None when neither gives it).

    Returns ``(value, run_opts, hparams)`` with the rest unchanged, for ``Pretrained.__init__``.
    """
    requested = None
    if run_opts is not None:
        given = set(getattr(run_opts, "overridden_args", run_opts))  # RunOptions or dict
        if name in given:
            requested = run_opts[name]
            run_opts = {k: run_opts[k] for k in given if k != name}
    if hparams is not None and name in hparams:
        requested = hparams[name] if requested is None else requested
        hparams = {k: v for k, v in hparams.items() if k != name}
    return requested, run_opts, hparams


def load_state_dict_strict(module: torch.nn.Module, path: PathLike) -> None:
    """Pretrainer hook: loads a state_dict into ``module``, all keys and shapes matching.

    SpeechBrain's default transfer is non-strict (a mismatch only logs warnings); for inference a
    half-loaded generator is an error. Keys of DDP / torch.compile wrappers are unwrapped.
    """
    state = unwrap_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with another shape", mismatched)) if v]
        raise ConfigError(f"{path}: does not fit the generator in {HPARAMS_FILE}: " + ", ".join(parts))
    module.load_state_dict(state, strict=True)


def unwrap_state_dict(state) -> Dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ConfigError(f"expected a state_dict, found a {type(state).__name__}")
    out = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out
