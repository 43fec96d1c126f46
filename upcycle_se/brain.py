"""The cycle-GAN :class:`UpCycleBrain`: Up-Cycle-SENet training, validation and testing in SpeechBrain.

Modules (``self.modules``, also the checkpoint names):

- ``gen_n2c``: noisy -> clean generator (the enhancer), ``gen_c2n``: clean -> noisy generator;
- ``disc_clean`` / ``disc_noisy``: one discriminator per domain.

Each training batch holds a noisy crop and a clean crop (unrelated ones in unpaired training). One step
updates both generators with one optimizer, then both discriminators with another (Adam 2e-4,
betas 0.5/0.999 in the hparams), as CycleGAN does. The losses are those of :mod:`upcycle_se.losses`:
adversarial (LSGAN), cycle consistency, identity and, with ``loss_type: l1gan`` (paired data), a supervised
L1; opt-in, a supervised L1 on remixed pseudo-pairs (``remix_weight``, see :class:`LossConfig`).

Validation scores whole files with PESQ and STOI (:class:`upcycle_se.metrics.QualityStats`) and keeps the
best checkpoint by validation PESQ; the test set is only scored, never used for selection. A validation
set without clean references (unpaired data, held-out noisy files) is scored without one instead: the
checkpoint with the best ``snr_gain`` is kept and the held-out cycle loss is logged
(:mod:`upcycle_se.validation`). The first ``n_valid_examples`` validation files (noisy, enhanced, clean
when known) and their spectrograms go to TensorBoard each epoch. The test
stage writes a per-file metrics CSV, a noisy-vs-enhanced summary table and a few enhanced wavs.

Opt-in, beyond the paper: ``ema_decay > 0`` keeps an exponential moving average of the noisy->clean
generator's weights (``torch.optim.swa_utils.AveragedModel``, updated after every generator step,
checkpointed as ``gen_n2c_ema``). Validation, test and ``upcycle-se export`` then use the average, which
smooths the step-to-step swings of adversarial training.

A step whose loss or gradient norm is not finite is skipped (no parameter is touched), counted and
logged; after ``nonfinite_patience`` such steps in a row training stops with :class:`TrainingDivergedError`,
before any checkpoint of a poisoned model can be written. Under DDP the decision to skip is collective (every
process skips when any one sees a non-finite value), so no process waits forever in a gradient all-reduce
that another one skipped.

Checkpoints are saved atomically (:class:`upcycle_se.checkpoints.AtomicCheckpointer`, also when the hparams
give a plain SpeechBrain ``Checkpointer``): a kill at any instant leaves a complete ``CKPT+*`` folder or none.
Incomplete folders written by older versions are set aside before recovery, so a rerun resumes from the
last complete checkpoint.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.metric_stats import MetricStats

from upcycle_se.audio import write_audio_atomic
from upcycle_se.checkpoints import make_atomic, set_aside_incomplete_checkpoints
from upcycle_se.errors import ConfigError, UserError
from upcycle_se.losses import (AdversarialLoss, LossConfig, remix_pseudo_noisy, si_sdr_loss, spectral_l1,
                                stoi_loss_term, waveform_l1)
from upcycle_se.lr_policy import EpochLRPolicy
from upcycle_se.models.attenuation import check_max_attenuation_db, max_attenuation
from upcycle_se.validation import ExampleCollector, log_examples, snr_gain

logger = logging.getLogger(__name__)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


class TrainingDivergedError(UserError):
    """Raised when the losses stay non-finite for too many steps in a row."""


class UpCycleBrain(sb.Brain):
    """SpeechBrain Brain for Up-Cycle-SENet (see the module docstring).

    Required hparams: ``loss`` (dict for :class:`LossConfig`), ``g_opt_class``, ``d_opt_class``
    (optimizer factories taking parameters), ``lr``, ``lr_policy``, ``n_epochs``, ``n_epochs_decay``,
    ``epoch_counter``, ``sample_rate``, ``valid_metrics`` (e.g. ``[pesq, stoi]``), ``test_metrics``,
    ``n_jobs``, ``output_folder``, ``save_folder``, ``train_logger``; optional ``tensorboard_logger``,
    ``enhanced_folder``, ``n_enhanced_to_save``, ``max_attenuation_db`` (the attenuation limit, in dB, of
    the enhancing generator at validation and test; None: none; see :mod:`upcycle_se.models.attenuation`).
    """

    # ------------------------------------------------------------------ set-up
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        make_atomic(self.checkpointer)  # every save of this Brain is all-or-nothing

    def on_fit_start(self):
        """Validates the loss config, writes ``model_config.json`` for export, then SpeechBrain's set-up."""
        self.loss_cfg = LossConfig.from_hparams(dict(self.hparams.loss))
        self._max_attenuation_db()  # a bad test-time option stops the run before training, not after
        self.adv = AdversarialLoss()
        self.lr_policy = EpochLRPolicy(self.hparams.lr_policy, self.hparams.n_epochs, self.hparams.n_epochs_decay)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        if if_main_process():
            self._write_model_config()
        self._add_ema()
        super().on_fit_start()

    EMA_NAME = "gen_n2c_ema"

    def _add_ema(self):
        """Adds the averaged generator (``ema_decay > 0``) to the modules and the checkpointer, before
        SpeechBrain recovers a checkpoint; it starts from the generator's current (e.g. ``--init_from``)
        weights. Its parameters take no gradient, so no optimizer or DDP wrapper sees them."""
        decay = float(getattr(self.hparams, "ema_decay", 0.0) or 0.0)
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema_decay={decay!r} must be in [0, 1) (0: off, the paper; e.g. 0.999)")
        self._check_resumable_with_ema(decay > 0)
        if decay == 0 or self.EMA_NAME in self.modules:
            return
        ema = torch.optim.swa_utils.AveragedModel(
            _unwrap(self.modules["gen_n2c"]), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
            use_buffers=True)
        ema.requires_grad_(False)
        self.modules[self.EMA_NAME] = ema
        if self.checkpointer is not None and self.EMA_NAME not in self.checkpointer.recoverables:
            self.checkpointer.add_recoverable(self.EMA_NAME, ema)

    def _check_resumable_with_ema(self, on: bool):
        """The newest checkpoint (the one a rerun resumes from) must have been written with the average
        kept or not kept alike: SpeechBrain would stop on a missing file, or silently drop the average."""
        ckpt = self.checkpointer.find_checkpoint() if self.checkpointer is not None else None
        if ckpt is None or (self.EMA_NAME in ckpt.paramfiles) == on:
            return
        if on:
            raise ConfigError(f"{ckpt.path}: this run was trained without ema_decay; resume it with ema_decay=0, "
                              "or start the average in a new output_folder")
        raise ConfigError(f"{ckpt.path}: this run was trained with ema_decay > 0; resume it with the same "
                          "ema_decay, or use a new output_folder")

    def _enhancer(self, stage) -> torch.nn.Module:
        """The noisy->clean generator used at ``stage``: the averaged one outside training, when kept."""
        if stage != sb.Stage.TRAIN and self.EMA_NAME in self.modules:
            return self.modules[self.EMA_NAME].module
        return self.modules["gen_n2c"]

    def _write_model_config(self):
        gen = _unwrap(self.modules["gen_n2c"])
        config = {"gen_n2c": gen.config, "gen_n2c_class": type(gen).__name__,
                  "sample_rate": int(self.hparams.sample_rate)}
        if self.loss_cfg.cycle:  # what the clean->noisy generator was, for tools that reload it
            config["gen_c2n"] = _unwrap(self.modules["gen_c2n"]).config
        path = Path(self.hparams.save_folder) / "model_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.part")
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, path)

    def _wrap_distributed(self):
        """SpeechBrain's DDP wrapping, except on CPU (gloo), where SyncBatchNorm cannot run.

        SpeechBrain converts every BatchNorm to SyncBatchNorm before wrapping, which raises on CPU
        modules; on CPU each process keeps its own batch statistics and DDP still averages gradients.
        """
        if self.distributed_launch and self.device_type == "cpu":
            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                        module, find_unused_parameters=self.find_unused_parameters
                    )
            return
        super()._wrap_distributed()

    def init_optimizers(self):
        """One optimizer for both generators, one for both discriminators, each checkpointed."""
        gens = [self.modules["gen_n2c"]] + ([self.modules["gen_c2n"]] if self.loss_cfg.cycle else [])
        self.g_optimizer = self.hparams.g_opt_class([p for g in gens for p in g.parameters()])
        self.optimizers_dict = {"g_optimizer": self.g_optimizer}
        if self.loss_cfg.adversarial:
            discs = [self.modules["disc_clean"]] + ([self.modules["disc_noisy"]] if self.loss_cfg.cycle else [])
            self.d_optimizer = self.hparams.d_opt_class([p for d in discs for p in d.parameters()])
            self.optimizers_dict["d_optimizer"] = self.d_optimizer
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)
            # on_fit_start recovers right after this: never from a checkpoint a kill left half-written.
            sb.utils.distributed.run_on_main(set_aside_incomplete_checkpoints, args=[self.checkpointer])

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Enhances the noisy batch: returns ``(enhanced [batch, time], enhanced_spec [batch, 2, F, N])``.

        Outside training, with the ``max_attenuation_db`` hparam set, the generator's mask gain is floored.
        """
        batch = batch.to(self.device)
        noisy, _ = batch.noisy_sig
        enhancer = self._enhancer(stage)
        if stage == sb.Stage.TRAIN:
            return enhancer(noisy, return_spec=True)
        with max_attenuation(enhancer, self._max_attenuation_db()):
            return enhancer(noisy, return_spec=True)

    def _max_attenuation_db(self) -> Optional[float]:
        """The ``max_attenuation_db`` hparam, checked (None when absent); a one-line ConfigError if bad."""
        return check_max_attenuation_db(getattr(self.hparams, "max_attenuation_db", None))

    def compute_objectives(self, predictions, batch, stage):
        """Validation/test objective: L1 between enhanced and reference clean speech (monitoring only).

        Also feeds the quality metrics; training losses are computed in :meth:`fit_batch`. Without a clean
        reference (noisy-only validation) the objective is the held-out cycle loss and the metric the blind
        SNR gain (:mod:`upcycle_se.validation`).
        """
        enhanced, _ = predictions
        noisy, lens = batch.noisy_sig
        if stage == sb.Stage.VALID and not self.valid_has_reference:
            with torch.no_grad():
                loss = waveform_l1(self.modules["gen_c2n"](enhanced), noisy, lens)
            self.metrics.append(batch.id, predict=enhanced.detach().float(), target=noisy, lengths=lens)
            self.valid_examples.add(batch.id, lens, noisy, enhanced)
            return loss
        clean, lens = batch.clean_sig
        loss = waveform_l1(enhanced, clean, lens)
        if stage == sb.Stage.VALID:
            self.valid_examples.add(batch.id, lens, noisy, enhanced, clean)
        self.metrics.append(batch.id, predict=enhanced.detach().float(), target=clean, lengths=lens)
        if stage == sb.Stage.TEST or (stage == sb.Stage.VALID and getattr(self, "valid_noisy_summary", None) is None):
            self.noisy_metrics.append(batch.id, predict=noisy, target=clean, lengths=lens)
        if stage == sb.Stage.TEST:
            self._save_enhanced(batch.id, enhanced, lens)
        return loss

    # ------------------------------------------------------------------ training step
    def fit_batch(self, batch):
        """One generator update then one discriminator update; returns the generator loss.

        A step with a non-finite loss or gradient norm is skipped (:meth:`_finite_or_skip`): no update,
        and the buffers its forward passes changed (BatchNorm statistics) are put back.
        """
        batch = batch.to(self.device)
        noisy, noisy_lens = batch.noisy_sig
        clean, clean_lens = batch.clean_sig
        cfg, m = self.loss_cfg, self.modules
        self._step_nonfinite = False
        self._step_buffers = self._buffers()  # put back if the step is skipped

        with self.training_ctx:
            g_loss, terms, fake_clean, fake_noisy = self._generator_loss(noisy, clean, noisy_lens, clean_lens)
        if not self._finite_or_skip(g_loss, terms):
            return g_loss.detach().cpu()
        self.g_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(g_loss).backward()
        self._clip_and_step(self.g_optimizer, terms)

        if cfg.adversarial:
            with self.training_ctx:
                d_loss = self.adv.discriminator_loss(m["disc_clean"](clean), m["disc_clean"](fake_clean.detach()))
                if cfg.cycle:
                    d_loss = d_loss + self.adv.discriminator_loss(
                        m["disc_noisy"](noisy), m["disc_noisy"](fake_noisy.detach())
                    )
            terms["d_adv"] = d_loss.detach()
            if self._finite_or_skip(d_loss, terms):
                self.d_optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(d_loss).backward()
                self._clip_and_step(self.d_optimizer, terms)
        self.scaler.update()
        if self._step_nonfinite:
            return g_loss.detach().cpu()
        self.nonfinite_in_a_row = 0

        for name, value in terms.items():
            self.epoch_terms[name] += float(value)
        self.epoch_terms_count += 1
        return g_loss.detach().cpu()

    def _buffers(self):
        """The modules' buffers (BatchNorm running statistics and counts) and a copy of their values."""
        bufs = list(self.modules.buffers())
        return bufs, [b.detach().clone() for b in bufs]

    @torch.no_grad()
    def _restore_buffers(self, saved):
        """Puts back the buffers of a skipped step: the forward pass of a non-finite batch has already
        averaged NaN into the BatchNorm running statistics, which would make every later evaluation NaN."""
        for buf, old in zip(*saved):
            buf.copy_(old)

    def _generator_loss(self, noisy, clean, noisy_lens, clean_lens):
        """The weighted generator objective and its terms (see :class:`LossConfig`)."""
        cfg, m = self.loss_cfg, self.modules
        terms: Dict[str, torch.Tensor] = {}
        fake_clean, fake_clean_spec = m["gen_n2c"](noisy, return_spec=True)
        fake_noisy = None
        total = fake_clean.new_zeros(())
        if cfg.adversarial:
            terms["g_adv"] = self.adv.generator_loss(m["disc_clean"](fake_clean))
        if cfg.cycle:
            fake_noisy = m["gen_c2n"](clean)
            if cfg.adversarial:
                terms["g_adv"] = terms["g_adv"] + self.adv.generator_loss(m["disc_noisy"](fake_noisy))
            terms["cycle"] = waveform_l1(m["gen_n2c"](fake_noisy), clean, clean_lens)
            if cfg.noisy_cycle_scale > 0:  # one generator pass saved when the noisy side is off
                terms["cycle"] = terms["cycle"] + cfg.noisy_cycle_scale * waveform_l1(
                    m["gen_c2n"](fake_clean), noisy, noisy_lens
                )
            total = total + cfg.cycle_weight * terms["cycle"]
            identity_weight = cfg.identity_weight_at(self.optimizer_step)
            if identity_weight > 0:  # two generator passes saved once a decayed weight reaches 0
                terms["identity"] = waveform_l1(m["gen_n2c"](clean), clean, clean_lens) + waveform_l1(
                    m["gen_c2n"](noisy), noisy, noisy_lens
                )
                total = total + identity_weight * terms["identity"]
        if cfg.remix_weight > 0:  # opt-in: noise from the noisy crops remixed onto clean speech
            pseudo_noisy = remix_pseudo_noisy(noisy, fake_clean, clean, noisy_lens, clean_lens,
                                              snr_db=cfg.remix_snr_draw(clean.shape[0]), noise_source=cfg.remix_noise)
            remixed, remixed_spec = m["gen_n2c"](pseudo_noisy, return_spec=True)
            terms["remix"] = self._supervised_l1(remixed, remixed_spec, clean, clean_lens)
            total = total + cfg.remix_weight * terms["remix"]
        if "g_adv" in terms:
            total = total + cfg.adversarial_weight * terms["g_adv"]
        if cfg.supervised:
            terms["supervised"] = self._supervised_l1(fake_clean, fake_clean_spec, clean, clean_lens)
            total = total + cfg.supervised_weight * terms["supervised"]
        terms = {k: v.detach() for k, v in terms.items()}
        return total, terms, fake_clean, fake_noisy

    def _supervised_l1(self, estimate, estimate_spec, clean, clean_lens) -> torch.Tensor:
        """Waveform L1 plus ``spectral_weight`` x spectral L1 (``spectral_compress`` applied) against clean
        speech ``[batch, time]``; ``estimate_spec`` is the generator's ``[batch, 2, F, N]`` output spectrum.
        The opt-in ``sisdr_weight`` and ``stoi_weight`` terms are added here (see :class:`LossConfig`)."""
        cfg = self.loss_cfg
        stft = _unwrap(self.modules["gen_n2c"]).stft
        loss = waveform_l1(estimate, clean, clean_lens) + cfg.spectral_weight * spectral_l1(
            estimate_spec, stft.stft(clean), cfg.spectral_compress
        )
        if cfg.sisdr_weight > 0:
            loss = loss + cfg.sisdr_weight * si_sdr_loss(estimate, clean, clean_lens)
        if cfg.stoi_weight > 0:
            rate = self.hparams.sample_rate
            loss = loss + cfg.stoi_weight * stoi_loss_term(estimate, clean, clean_lens, rate)
        return loss

    def _clip_and_step(self, optimizer, terms: Dict[str, torch.Tensor]):
        """Clips the gradients (``max_grad_norm > 0``) and steps, unless their norm is not finite (clipping by
        a NaN norm would turn every parameter into NaN): then the update is skipped like a non-finite loss."""
        self.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # max_grad_norm <= 0: no clipping (the paper's); the norm is still computed for the finiteness check.
        limit = self.max_grad_norm if self.max_grad_norm and self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        # With fp16 loss scaling, inf gradients are routine: the scaler skips those steps itself.
        if not self.scaler.is_enabled() and not self._finite_or_skip(norm, {**terms, "grad_norm": norm}):
            return
        self.scaler.step(optimizer)
        if optimizer is self.g_optimizer:  # one count per training step, as in SpeechBrain's fit_batch
            self.optimizer_step += 1
            if self.EMA_NAME in self.modules:
                self.modules[self.EMA_NAME].update_parameters(_unwrap(self.modules["gen_n2c"]))

    def _finite_everywhere(self, value: torch.Tensor) -> bool:
        """True if ``value`` is finite on this process and, under DDP, on every other one.

        The all-reduce makes skipping a collective decision: a process that skipped its backward while the
        others ran theirs would leave them waiting in DDP's gradient all-reduce forever.
        """
        finite = torch.isfinite(value.detach()).all().to(torch.float32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    def _finite_or_skip(self, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> bool:
        """True if ``loss`` is finite on every process; otherwise counts the step as skipped (once per
        batch) and stops after ``nonfinite_patience`` such steps in a row. :meth:`fit_batch` resets the run
        of bad steps when a whole step was finite. All processes reach the same answer, so they skip,
        count and stop together."""
        if self._finite_everywhere(loss):
            return True
        if not getattr(self, "_step_nonfinite", False):
            self._step_nonfinite = True
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
        if getattr(self, "_step_buffers", None) is not None:
            self._restore_buffers(self._step_buffers)
        bad = ", ".join(k for k, v in terms.items() if not torch.isfinite(v).all()) or "loss on another process"
        logger.warning(f"non-finite {bad}: step skipped ({self.nonfinite_in_a_row} in a row, "
                       f"{self.nonfinite_total} this run)")
        for opt in self.optimizers_dict.values():
            opt.zero_grad(set_to_none=True)
        if self.nonfinite_in_a_row > self.nonfinite_patience:
            raise TrainingDivergedError(
                f"training diverged: {self.nonfinite_in_a_row} steps in a row had non-finite losses ({bad}); "
                "stopped without saving a checkpoint of this state. Lower lr or check the data."
            )
        return False

    # ------------------------------------------------------------------ stages
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; also remembers an epoch-aware training set (see :meth:`on_stage_start`)."""
        if stage == sb.Stage.TRAIN and hasattr(dataset, "set_epoch"):
            self.train_dataset = dataset
        if stage == sb.Stage.VALID:  # a noisy-only set (unpaired data) is validated without a reference
            self.valid_has_reference = getattr(dataset, "has_reference", True)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def on_stage_start(self, stage, epoch=None):
        """Resets metric trackers; at the start of a training epoch, sets that epoch's learning rate.

        The training set is told the epoch so that its random crops and unpaired draws depend only on
        (seed, epoch, item): a resumed run draws exactly what the interrupted one would have.
        """
        from upcycle_se.metrics import QualityStats

        n_jobs = int(getattr(self.hparams, "n_jobs", 1))
        if stage == sb.Stage.TRAIN:
            self.epoch_terms = defaultdict(float)
            self.epoch_terms_count = 0
            self.current_lr = self.lr_policy.apply(self.optimizers_dict.values(), self.hparams.lr, epoch)
            if getattr(self, "train_dataset", None) is not None:
                self.train_dataset.set_epoch(epoch)
        elif stage == sb.Stage.VALID:
            self.valid_examples = ExampleCollector(getattr(self.hparams, "n_valid_examples", 0))
            if not self.valid_has_reference:
                self.metrics = MetricStats(metric=functools.partial(snr_gain, sample_rate=self.hparams.sample_rate))
                return
            self.metrics = QualityStats(metrics=tuple(self.hparams.valid_metrics), n_jobs=n_jobs)
            # The noisy input's scores are the bar to clear; computed once per run.
            if getattr(self, "valid_noisy_summary", None) is None:
                self.noisy_metrics = QualityStats(metrics=tuple(self.hparams.valid_metrics), n_jobs=n_jobs)
        else:
            self.metrics = QualityStats(metrics=tuple(self.hparams.test_metrics), n_jobs=n_jobs)
            self.noisy_metrics = QualityStats(metrics=tuple(self.hparams.test_metrics), n_jobs=n_jobs)
            self.n_enhanced_saved = 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs losses per term, metrics and example audios; keeps the best checkpoint by validation PESQ
        (by ``snr_gain`` when validation has no clean reference); writes test reports."""
        if stage == sb.Stage.TRAIN:
            n = max(self.epoch_terms_count, 1)
            self.train_stats = {"loss": stage_loss, **{k: v / n for k, v in self.epoch_terms.items()},
                                "nonfinite_steps": self.nonfinite_total}
            return
        if stage == sb.Stage.VALID and not self.valid_has_reference:
            summary = {"snr_gain": self.metrics.summarize("average")}
            stats = {"cycle_loss": stage_loss, **summary}
        else:
            summary = self.metrics.summarize()
            stats = {"loss": stage_loss, **summary}
        if stage == sb.Stage.VALID and self.valid_has_reference:
            if getattr(self, "valid_noisy_summary", None) is None:
                self.valid_noisy_summary = self.noisy_metrics.summarize()
            stats.update({f"noisy_{k}": v for k, v in self.valid_noisy_summary.items()})
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "lr": self.current_lr}
            self.hparams.train_logger.log_stats(stats_meta=meta, train_stats=self.train_stats, valid_stats=stats)
            # Called on every rank: SpeechBrain's loggers are main-process-only *collectives* (they
            # broadcast their result), so calling them on rank 0 alone desynchronises DDP.
            if getattr(self.hparams, "tensorboard_logger", None) is not None:
                self.hparams.tensorboard_logger.log_stats(meta, self.train_stats, stats)
                log_examples(self.hparams.tensorboard_logger, self.valid_examples.examples,
                             int(self.hparams.sample_rate))
            key = "pesq" if self.valid_has_reference else "snr_gain"
            self.checkpointer.save_and_keep_only(meta={**summary, "epoch": epoch}, max_keys=[key])
        else:
            noisy_summary = self.noisy_metrics.summarize()
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats={**stats, **{f"noisy_{k}": v for k, v in noisy_summary.items()}},
            )
            if if_main_process():
                self._write_test_report(summary, noisy_summary)

    def _write_test_report(self, summary: Dict[str, float], noisy_summary: Dict[str, float]):
        out = Path(self.hparams.output_folder)
        self.metrics.write_csv(out / "test_metrics_enhanced.csv")
        self.noisy_metrics.write_csv(out / "test_metrics_noisy.csv")
        names = list(summary)
        lines = ["| system | " + " | ".join(n.upper() for n in names) + " |",
                 "|---" * (len(names) + 1) + "|",
                 "| noisy | " + " | ".join(f"{noisy_summary[n]:.3f}" for n in names) + " |",
                 "| enhanced | " + " | ".join(f"{summary[n]:.3f}" for n in names) + " |"]
        (out / "test_summary.md").write_text("\n".join(lines) + "\n")
        logger.info("test summary (means over files):\n" + "\n".join(lines))

    def _save_enhanced(self, ids, enhanced: torch.Tensor, lens: torch.Tensor):
        """Writes the first ``n_enhanced_to_save`` enhanced test files (16-bit wav, trimmed to length)."""
        limit = int(getattr(self.hparams, "n_enhanced_to_save", 0))
        folder = getattr(self.hparams, "enhanced_folder", None)
        if folder is None or not if_main_process():
            return
        for uid, wav, rel in zip(ids, enhanced, lens):
            if self.n_enhanced_saved >= limit:
                return
            n = int(round(float(rel) * wav.shape[-1]))
            write_audio_atomic(Path(folder) / f"{uid}.wav", wav[:n].float().cpu(), int(self.hparams.sample_rate))
            self.n_enhanced_saved += 1

    valid_has_reference = True  # set from the validation set in make_dataloader

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the best checkpoint (by ``max_key``) before the test stage; needs the loss config too."""
        if not hasattr(self, "loss_cfg"):
            self.loss_cfg = LossConfig.from_hparams(dict(self.hparams.loss))
        self._add_ema()
        if self.checkpointer is not None:
            sb.utils.distributed.run_on_main(set_aside_incomplete_checkpoints, args=[self.checkpointer])
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
