"""The training loop: dataset -> (G, D) -> objective -> optimizers, with artifacts and checkpoints
(the full state a checkpoint holds, and how it is written and read back, is `state.TrainState`).

Progress is counted in steps (one discriminator batch each) and in real images seen. One step
draws fresh noise, updates D, and every `n_critic`-th step updates G (Goodfellow et al. 2014,
Alg. 1; Gulrajani et al. 2017 for n_critic > 1); what each phase minimises is `objective.Objective`,
the learning rate at each step the pure `optim.learning_rates`. Losses stay on the device and are
read back only at the end of a log window (every `log_every` steps, and at checkpoints,
evaluations, epoch ends and max_steps), so the hot path never waits for the host.

At each window end the ranks agree, in one small all-reduce, on the window's mean losses, on
whether any rank's weights turned non-finite and on whether any rank received a stop signal; the
health guard and the stop rules turn that into one `Verdict`, which `_train` acts on in one place.
So every rank rolls back, stops and checkpoints at the same step.

A private run (`privacy.enabled`) takes D's step from `privacy.PrivateDiscriminator` instead (DP-SGD on
the real images' term, Poisson-sampled batches, the ledger in every checkpoint), logs nothing of the
real batches, and stops before a step would spend more than its budget.
"""

from __future__ import annotations

import contextlib
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ganforge import precision, runtime
from ganforge.config import Config, save_yaml, validate
from ganforge.errors import ConfigError, GanforgeError
from ganforge.training import capacity, privacy, setup
from ganforge.training.artifacts import RunLog, Snapshots
from ganforge.training.ema import follow
from ganforge.training.gradsync import GradSync
from ganforge.training.health import HealthGuard, Verdict
from ganforge.training.objective import Objective
from ganforge.training.optim import learning_rates, set_learning_rate
from ganforge.training.resume import check_resume
from ganforge.training.state import TrainState
from ganforge.training.window import Window


class TrainingDiverged(GanforgeError):
    """The loss kept turning non-finite after every rollback."""


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for `module` inside (its input gradients still flow through it)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


def one_line(exc: BaseException, *, device: torch.device, run_dir: Path) -> Optional[GanforgeError]:
    """The one-line error for a failure the user can act on, or None for a bug (re-raised as it is)."""
    if isinstance(exc, OSError):  # a full or vanished disk while logging: the last checkpoint is intact
        return GanforgeError(f"cannot write {exc.filename or run_dir} ({exc.strerror or exc}); free space, "
                             f"then resume from the last checkpoint: --resume {run_dir}")
    op = runtime.nondeterministic_op(exc)  # deterministic mode refused an operation: say which
    if op is None:
        return None
    return ConfigError(f"train.deterministic=true: {op} has no deterministic implementation on {device.type}; "
                       f"set train.deterministic=false, or change the setting that uses it (e.g. "
                       f"model.upsample=nearest)")


def optimize(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, sync: GradSync) -> None:
    """Backward with the gradient all-reduce overlapped, then the step. Under fp16 the loss is scaled
    and a step whose averaged gradients overflowed is skipped, alike on every rank."""
    opt.zero_grad(set_to_none=True)
    sync.arm()
    scaler.scale(loss).backward()
    sync.finish()
    scaler.step(opt)
    scaler.update()


class Trainer:
    def __init__(self, cfg: Config, *, run_dir: Path, resume: bool = False, dist: runtime.Dist = runtime.Dist(),
                 allow_changes: bool = False):
        self.cfg, self.run_dir, self.dist, t = cfg, run_dir, dist, cfg.train
        validate(cfg)  # the command has checked already; a config built in code is checked here, before any work
        # What a resume changes is checked before anything is built or written (ganforge.training.resume).
        self.changes = check_resume(run_dir, cfg, allow=allow_changes) if resume else {}
        self.device, self.precision = setup.device_and_precision(cfg, dist)
        augment, self.ada = setup.augmentation(cfg, self.device)
        self.estimate = setup.check_models(cfg, device=self.device, dist=dist,
                                           half_precision=self.precision.dtype is not None)
        data, placement = setup.load_data(cfg, device=self.device, dist=dist)
        self.data_info = setup.data_info(data)
        self.num_classes = data.num_classes if cfg.model.conditional else 0
        self.G, self.D, self.G_ema = setup.models(cfg, data, device=self.device, dist=dist)
        self.opt_g, self.opt_d = setup.optimizers(cfg, self.G, self.D, self.device)
        # One loss scaler per optimizer: D's and G's gradients overflow at different scales (fp16 only).
        self.scaler_d, self.scaler_g = self.precision.scaler(self.device), self.precision.scaler(self.device)
        self.sync_d, self.sync_g = (GradSync(m, world_size=dist.world_size) for m in (self.D, self.G))
        g_fast, d_fast = setup.fast_modules(cfg, self.G, self.D)
        self.objective = Objective(cfg.loss, z_dim=cfg.model.z_dim, augment=augment, precision=self.precision,
                                   device=self.device, G=self.G, D=self.D, g_fast=g_fast, d_fast=d_fast)
        self.private = privacy.build(  # a private run's D step: DP-SGD on the real images' term (or None)
            cfg, run_dir, len(data), objective=self.objective, D=self.D, opt_d=self.opt_d, num_classes=self.num_classes,
            device=self.device)
        self.batches = setup.batches(cfg, data, placement, device=self.device, dist=dist,
                                     num_classes=self.num_classes, private=self.private)
        # A small copy, not a view pinning the set; none for a private run (samples/real.png would publish it).
        self.real_preview = None if self.private else data.images[: t.num_samples].clone()
        self.evaluator = setup.evaluator(cfg, data, device=self.device, dist=dist, num_classes=self.num_classes)
        self.snapshots = Snapshots(seed=t.seed, z_dim=cfg.model.z_dim, num_samples=t.num_samples,
                                   num_classes=self.num_classes, device=self.device)
        self.state = TrainState(cfg, run_dir, self.data_info, {"G": self.G, "D": self.D, "G_ema": self.G_ema},
                                {"opt_g": self.opt_g, "opt_d": self.opt_d, "scaler_g": self.scaler_g,
                                 "scaler_d": self.scaler_d, **({"ada": self.ada} if self.ada else {}),
                                 **({"privacy": self.private} if self.private else {})},
                                optional=("scaler_g", "scaler_d", "ada"))
        self.progress, self.resumed = self.state.progress, resume
        if resume:
            self._restore(allow_changes=allow_changes)
        else:  # different noise on every rank, after the shared weight initialisation
            runtime.seed_everything(t.seed + 1 + dist.rank)
        self.log = RunLog(run_dir, resume_step=self.progress.step if resume else None) if dist.is_main else None
        if self.log is not None:  # the start is accepted: record what it was estimated to need
            capacity.save_record(self.estimate, run_dir)
        self.health = HealthGuard(loss_has_probabilities=self.objective.loss.probabilities)
        self.total_steps = t.epochs * self.batches.steps_per_epoch  # the learning-rate schedule's horizon
        self.window = Window(skip_non_finite=self.precision.scaled, images=self.progress.images)
        self._signals = runtime.GracefulStop()

    # ------------------------------------------------------------------ one step

    def train_step(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        """D's step, then G's every `n_critic`-th step; losses accumulate on the device."""
        cfg, p = self.cfg, self.progress
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_g = self.private.g_step_due() if self.private else (p.step + 1) % cfg.loss.n_critic == 0
        lr_g, lr_d = learning_rates(cfg.optim, step=p.step, total_steps=self.total_steps, lr_scale=p.lr_scale)
        set_learning_rate(self.opt_g, lr_g)
        set_learning_rate(self.opt_d, lr_d)

        if self.private is None:
            d = self.objective.discriminator(x, labels, step=p.step, train_g=train_g, scaler=self.scaler_d)
            optimize(d.loss, self.opt_d, self.scaler_d, self.sync_d)
            fake, logged = d.fake, {"loss_d": d.loss, "d_real": d.d_real, "d_fake": d.d_fake}
            if self.ada is not None:  # (refused for private runs: r_t is a statistic of the real batch)
                logged["augment_rt"] = d.real_sign
        else:  # the generated images get uniform labels; nothing of the real batch is logged
            fake, labels, logged = self.private.step(x, labels, train_g=train_g)
        self.window.add(**logged)
        if train_g:
            with frozen(self.D):  # G's loss needs D's input gradients only, not its weight gradients
                loss_g = self.objective.generator(x, labels, fake)
                optimize(loss_g, self.opt_g, self.scaler_g, self.sync_g)
            m, n_d = cfg.model, self.private.rate if self.private else cfg.loss.n_critic
            # the EMA's half-life is in real images: those D saw since G's last step
            follow(self.G_ema, self.G, images=self.batches.counted(x) * self.dist.world_size * n_d,
                   images_seen=p.images, half_life_kimg=m.ema_kimg, rampup=m.ema_rampup)
            self.window.add(loss_g=loss_g)
            if self.precision.scaled:
                self.window.add(loss_scale_g=precision.scale_tensor(self.scaler_g))
        if self.precision.scaled:  # the current loss scales, logged: a scale that keeps falling means overflows
            self.window.add(loss_scale_d=precision.scale_tensor(self.scaler_d))

    # ------------------------------------------------------------------ the loop

    def run(self) -> Verdict:
        """Train until the last epoch or a stop; the returned verdict says why it stopped ("" when it finished)."""
        p = self.progress
        if self.log is not None:  # rank 0 (dist.is_main), the only one with a log
            save_yaml(self.cfg, self.run_dir / "config.yaml")
            Snapshots.write_real(self.log, self.real_preview)
            if self.changes:
                self.log.log({"step": p.step, "event": "resume", "changed": self.changes})
        if not self.resumed:
            self.save()  # a rollback target from the very start
        self._signals.install()
        self._start_wall = time.perf_counter() - p.wall
        try:
            verdict = self._train()
        except (RuntimeError, OSError) as exc:
            raise (one_line(exc, device=self.device, run_dir=self.run_dir) or exc) from None
        finally:
            self._signals.uninstall()
            if self.log is not None:
                self.log.close()
        if self.dist.is_main:
            done = f"stopped: {verdict.stop}" if verdict.stop else "finished"
            print(f"{done} at step {p.step} ({p.images / 1000:.1f} kimg, {p.wall:.0f} s); run folder: {self.run_dir}",
                  flush=True)
        return verdict

    def _train(self) -> Verdict:
        """The loop. Every decision (roll back, stop, checkpoint, evaluate) is taken here, at a window end."""
        from ganforge.training.progress import EpochBar

        t, p, steps = self.cfg.train, self.progress, self.batches.steps_per_epoch
        if t.max_steps and p.step >= t.max_steps:  # a resume past --max-steps: not one step more
            return Verdict(stop=f"reached train.max_steps={t.max_steps}")
        while p.epoch < t.epochs:
            verdict = Verdict()
            bar = EpochBar(epoch=p.epoch, epochs=t.epochs, total=steps, start=p.pos, enabled=self.dist.is_main)
            try:
                for x, labels in self.batches.epoch(p.epoch, start=p.pos):
                    # 1. One step, and the progress it makes.
                    seen_before = p.images
                    self.G.train()
                    self.train_step(x, labels)
                    p.step, p.pos = p.step + 1, p.pos + 1
                    p.images += self.batches.counted(x) * self.dist.world_size
                    p.wall = time.perf_counter() - self._start_wall
                    bar.update()
                    # 2. A window end? Only then does the host wait for the device.
                    due = {"evaluate": self.evaluator is not None and self.evaluator.due_images(seen_before, p.images),
                           "save": t.checkpoint_steps > 0 and p.step % t.checkpoint_steps == 0,
                           "epoch_done": p.pos == steps,
                           "budget": bool(self.private and self.private.exhausted(p.step, self.total_steps))}
                    if not (any(due.values()) or p.step % t.log_every == 0 or (t.max_steps and p.step >= t.max_steps)):
                        continue
                    # 3. The ranks agree on the window and judge it: roll back, stop, or go on.
                    verdict = self._end_window()
                    if verdict.rollback:
                        break
                    bar.show(self.log.history[-1] if self.log is not None else {})
                    # 4. What a healthy window end calls for: evaluation, the epoch's end, samples, checkpoint.
                    if due["evaluate"]:
                        self._evaluate(epoch=p.epoch + p.pos / steps)
                    if due["epoch_done"]:
                        p.epoch, p.pos = p.epoch + 1, 0
                    self._outputs(save=due["save"], epoch_done=due["epoch_done"], stop=bool(verdict.stop))
                    if verdict.stop:
                        return verdict
            finally:
                bar.close()
            # 5. A rollback restores the last good checkpoint; the epoch loop restarts from its position.
            if verdict.rollback:
                self._rollback(verdict.rollback)
        return Verdict()

    def _end_window(self) -> Verdict:
        """Agree with the other ranks on the window (one all-reduce), log it on rank 0 and judge it."""
        t, p = self.cfg.train, self.progress
        asked = [torch.tensor(self._signals.signum == s, device=self.device) for s in (signal.SIGINT, signal.SIGTERM)]
        sums, counts = self.window.take()
        means, (sigint, sigterm, bad_weights) = self.dist.agree(
            sums, counts, [*asked, ~HealthGuard.all_finite([self.G, self.D])])
        # A window without a generator step (n_critic > 1) has no G loss: the key is absent, not NaN.
        record = {"step": p.step, "epoch": p.epoch + p.pos / self.batches.steps_per_epoch, "kimg": p.images / 1000,
                  **means, "images_per_s": self.window.rate(p.images), "time": p.wall,
                  **(self.private.record() if self.private else {})}
        if self.ada is not None:  # every rank moves p alike: r_t is the window's all-reduced mean
            record["augment_p"] = self.ada.update(record.get("augment_rt"), images=p.images)
        rollback = self.health.check(record, weights_finite=not bad_weights)
        if self.log is not None and not rollback:
            self.log.log(record)
        if sigint or sigterm:
            signum = signal.SIGTERM if sigterm else signal.SIGINT
            return Verdict(rollback, stop=f"received {signal.Signals(signum).name}", exit_code=128 + signum)
        if t.max_steps and p.step >= t.max_steps:
            return Verdict(rollback, stop=f"reached train.max_steps={t.max_steps}")
        return Verdict(rollback, stop=self.private.exhausted(p.step, self.total_steps) if self.private else "")

    def _outputs(self, *, save: bool, epoch_done: bool, stop: bool) -> None:
        """Samples and checkpoints after a healthy window end (the epoch counter already advanced)."""
        t, p = self.cfg.train, self.progress
        last = epoch_done and p.epoch == t.epochs
        save = save or stop or last or (epoch_done and p.epoch % t.checkpoint_every == 0)
        if epoch_done or save:  # per-rank batch-norm statistics, averaged before samples and checkpoints
            # G_ema is None without EMA (model.ema_kimg=0): there is nothing of it to average.
            self.dist.average_buffers(*(m for m in self.state.modules.values() if m is not None))
        if self.log is not None and (stop or last or (epoch_done and p.epoch % t.sample_every == 0)):
            self._write_samples(self.log)
        if save:
            self.save()
        if epoch_done and self.evaluator is not None and self.evaluator.due_epoch(p.epoch):
            self._evaluate(epoch=p.epoch)

    def _rollback(self, reason: str) -> None:
        """Restore the last good checkpoint with lower learning rates, or give up after too many tries."""
        t, p = self.cfg.train, self.progress
        if p.rollbacks >= t.max_rollbacks:
            raise TrainingDiverged(f"{reason}; gave up after {p.rollbacks} rollbacks (train.max_rollbacks). "
                                   f"Lower optim.lr_g / optim.lr_d or change the loss, then resume from "
                                   f"{self.run_dir}")
        rollbacks, lr_scale = p.rollbacks + 1, p.lr_scale * t.rollback_lr_factor
        path = self._restore(allow_changes=True)
        p.rollbacks, p.lr_scale = rollbacks, lr_scale
        self.window = Window(skip_non_finite=self.precision.scaled, images=p.images)
        self._start_wall = time.perf_counter() - p.wall
        if self.log is not None:
            self.log.truncate(p.step)
            self.log.log({"step": p.step, "event": "rollback", "reason": reason, "restored": str(path),
                          "lr_scale": lr_scale})
        warnings.warn(f"{reason}: rolled back to {path.name} and scaled the learning rates by {lr_scale:g} "
                      f"(rollback {rollbacks} of {t.max_rollbacks})", stacklevel=2)

    # ------------------------------------------------------------------ snapshots, evaluation, checkpoints

    def _sampler(self) -> nn.Module:
        return self.G_ema if self.G_ema is not None else self.G

    def _write_samples(self, log: RunLog) -> None:
        p = self.progress
        images = self.snapshots.images(self._sampler())
        # An untrained G is legitimately near-constant: judge it only later (never against a private run's data).
        if p.images >= 50_000 and self.real_preview is not None:
            self.health.check_diversity(images[:64], self.real_preview[:64].float() / 127.5 - 1, step=p.step)
        # The epoch these weights finished, or the one they are inside (a stop mid-epoch).
        self.snapshots.write(log, images, epoch_label=p.epoch if p.pos == 0 else p.epoch + 1, step=p.step)
        log.plot_losses(probabilities=self.objective.loss.probabilities)

    def _evaluate(self, *, epoch: float) -> None:
        """Log a small-N evaluation; keep the checkpoint with the lowest FID as checkpoints/best."""
        from ganforge.training.periodic_eval import improved

        # Evaluations fall due only where train.eval_every(_kimg) made an evaluator (see its callers).
        assert self.evaluator is not None
        p, g = self.progress, self._sampler()
        self.dist.average_buffers(g)  # the same generator on every rank, in eval mode too
        values = self.evaluator(g, step=p.step)
        if self.log is not None:
            self.log.log({"step": p.step, "epoch": epoch, **values})
        best = improved(values, p.best_fid)
        if best is not None:
            p.best_fid = best
            self.save(name="best")

    def save(self, *, name: Optional[str] = None) -> Optional[Path]:
        """Checkpoint the full state (rank 0 writes); called only after a healthy window end."""
        return self.state.save(self.dist, self.device, name=name)

    def _restore(self, *, allow_changes: bool) -> Path:
        path, changes = self.state.restore(self.dist, self.device, allow_changes=allow_changes)
        self.changes.update(changes)
        return path
