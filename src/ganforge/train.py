"""The training loop: dataset -> (G, D) -> losses -> optimizers, with artifacts and checkpoints.

Progress is counted in steps (one discriminator batch each) and in real images seen. One step
draws fresh noise, updates D, and every `n_critic`-th step updates G (Goodfellow et al. 2014,
Alg. 1; Gulrajani et al. 2017 for n_critic > 1). Losses stay on the device and are read back only
at the end of a log window (every `log_every` steps, and at checkpoints, evaluations, epoch ends
and max_steps), so the hot path never waits for the host. The quality switches of one step
(DiffAugment, R1/R2, relativistic loss, EMA by half-life, the learning-rate decay) are config
entries read in `train_step`; their modules cite the papers.

At each window end the ranks agree, in one small all-reduce, on the window's mean losses, on
whether any rank's weights turned non-finite and on whether any rank received a stop signal; the
health guard and the stop rules turn that into one `Verdict`, which `_train` acts on in one place.
So every rank rolls back, stops and checkpoints at the same step.
"""

from __future__ import annotations

import copy
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ganforge import __version__
from ganforge.artifacts import RunLog
from ganforge.augment import DiffAugment
from ganforge.checkpoint import load_latest, save_checkpoint, split_prefix
from ganforge.config import Config, save_yaml, to_dict
from ganforge.data import DATASETS, load_dataset
from ganforge.data.batches import DeviceBatches, choose_placement, describe
from ganforge.errors import CheckpointError, ConfigError, GanforgeError
from ganforge.health import HealthGuard, Verdict
from ganforge.ema import ema_beta, update_ema
from ganforge.gradsync import GradSync
from ganforge.losses import LOSSES, gradient_penalty, zero_centred_penalty
from ganforge.models import build_models
from ganforge.optim import OPTIMIZERS
from ganforge.resume import check_ranks, check_resume
from ganforge import capacity, precision, runtime


@dataclass
class Progress:
    step: int = 0          # discriminator steps done
    epoch: int = 0         # current epoch, 0-based
    pos: int = 0           # batches of the current epoch already done
    images: int = 0        # real images seen, all ranks together
    wall: float = 0.0      # training seconds so far
    rollbacks: int = 0     # health-guard rollbacks so far
    lr_scale: float = 1.0  # product of the rollback learning-rate cuts
    best_fid: float = math.inf  # lowest FID of the periodic evaluations (checkpoints/best)


class TrainingDiverged(GanforgeError):
    """The loss kept turning non-finite after every rollback."""


class Trainer:
    def __init__(self, cfg: Config, *, run_dir: Path, resume: bool = False, dist: runtime.Dist = runtime.Dist(),
                 allow_changes: bool = False):
        self.cfg, self.run_dir, self.dist = cfg, run_dir, dist
        # What a resume changes is checked before anything is built or written (ganforge.resume).
        self.changes = check_resume(run_dir, cfg, allow=allow_changes) if resume else {}
        t = cfg.train
        runtime.configure(t, world_size=dist.world_size)
        self.device = runtime.pick_device(t.device, local_rank=dist.local_rank, world_size=dist.world_size)
        self.precision = precision.choose(t.amp, self.device)
        conflict = runtime.deterministic_conflict(cfg, self.device)
        if conflict:
            raise ConfigError(conflict)
        self.loss = LOSSES.get(cfg.loss.name)
        OPTIMIZERS.get(cfg.optim.name)  # refuse an unknown optimizer before the data loads
        self.augment = DiffAugment(cfg.data.augment)

        # Build the models from the dataset's declared shape first, so an impossible combination is
        # refused before a long decode; then check the decoded data agrees.
        spec = DATASETS.get(cfg.data.name)
        shape = (spec.channels, cfg.data.size or spec.native_size)
        runtime.seed_everything(t.seed)  # same initial weights on every rank
        # A folder's classes are known only after listing it: assume some for this first check.
        guess_classes = spec.num_classes or (2 if cfg.model.conditional and spec.name == "folder" else 0)
        self.estimate = capacity.check_start(cfg, channels=shape[0], size=shape[1], num_classes=guess_classes,
                                             device=self.device, dist=dist,  # on meta: refuses before allocating
                                             half_precision=self.precision.dtype is not None)
        self.G, self.D = build_models(cfg.model, channels=shape[0], size=shape[1], num_classes=guess_classes)
        penalised = self.loss.gradient_penalty or cfg.loss.r1_gamma > 0 or cfg.loss.r2_gamma > 0
        if penalised and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.D.modules()):
            what = f"loss.name={cfg.loss.name}" if self.loss.gradient_penalty else "loss.r1_gamma / loss.r2_gamma"
            raise ConfigError(f"{what} penalises each sample's gradient, which batch norm in the "
                              f"discriminator mixes across the batch; use model.d_norm=layer or none "
                              f"(architecture {cfg.model.arch!r})")
        data = load_dataset(name=cfg.data.name, root=cfg.data.root, split=cfg.data.split, size=cfg.data.size,
                            limit=cfg.data.limit, dist=dist)  # one decode per host under torchrun
        # Where the set lives is decided (and a forced device copy that cannot fit refused) before any model
        # weights or optimizer state take device memory.
        placement = choose_placement(cfg.data.placement, share=cfg.data.device_share, nbytes=data.images.nbytes,
                                     device=self.device)
        if (data.channels, data.size) != shape or data.num_classes != guess_classes:
            runtime.seed_everything(t.seed)
            self.G, self.D = build_models(cfg.model, channels=data.channels, size=data.size,
                                          num_classes=data.num_classes)
        self.data_info = {"channels": data.channels, "size": data.size, "num_classes": data.num_classes,
                          "class_names": list(data.class_names), "source": data.source, "count": len(data)}
        self.num_classes = data.num_classes if cfg.model.conditional else 0
        if t.sync_bn and dist.enabled:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
            self.G = nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.G.to(self.device)
        self.D.to(self.device)
        dist.broadcast_modules(self.G, self.D)  # identical starting weights on every rank, whatever the RNG did
        if t.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.model.ema_kimg > 0 else None
        build_opt = OPTIMIZERS.get(cfg.optim.name)
        self.opt_g = build_opt(self.G.parameters(), cfg.optim.lr_g, cfg.optim, self.device)
        self.opt_d = build_opt(self.D.parameters(), cfg.optim.lr_d, cfg.optim, self.device)
        self.batches = DeviceBatches(data.images, data.labels if self.num_classes else None,
                                     batch_size=t.batch_size, seed=t.seed, device=self.device,
                                     rank=dist.rank, world_size=dist.world_size, hflip=cfg.data.hflip,
                                     placement=placement)
        if dist.is_main:
            print(describe(data.images, placement=placement, device=self.device, mapped=data.mapped), flush=True)
        self.real_preview = data.images[: t.num_samples].clone()  # a small copy, not a view pinning the set
        self.evaluator = None
        if t.eval_every or t.eval_every_kimg:  # on every rank: under torchrun they share the work
            from ganforge.periodic_eval import PeriodicEval

            self.evaluator = PeriodicEval(cfg, data, device=self.device, num_classes=self.num_classes,
                                          shard=dist.enabled)
        self.fixed_z, self.fixed_labels = self._fixed_latents()
        # One loss scaler per optimizer: D's and G's gradients overflow at different scales (fp16 only).
        self.scaler_d, self.scaler_g = self.precision.scaler(self.device), self.precision.scaler(self.device)
        self.sync_d = GradSync(self.D, world_size=dist.world_size)
        self.sync_g = GradSync(self.G, world_size=dist.world_size)
        # The compiled modules share the eager ones' weights. Compiled graphs have no double backward,
        # so the passes a gradient penalty differentiates twice call the eager D (`train_step`).
        self.g_fast, self.d_fast = self.G, self.D
        if t.compile:
            backends = torch._dynamo.list_backends(exclude_tags=())
            if t.compile_backend not in backends:
                raise ConfigError(f"train.compile_backend={t.compile_backend!r}: choose one of {', '.join(backends)}")
            self.g_fast = torch.compile(self.G, backend=t.compile_backend)
            self.d_fast = torch.compile(self.D, backend=t.compile_backend)

        self.progress = Progress()
        self.resumed = resume
        if resume:
            self._restore(allow_changes=allow_changes)
        else:  # different noise on every rank, after the shared weight initialisation
            runtime.seed_everything(t.seed + 1 + dist.rank)
        self.log = RunLog(run_dir, resume_step=self.progress.step if resume else None) if dist.is_main else None
        if self.log is not None:  # the start is accepted: record what it was estimated to need
            capacity.save_record(self.estimate, run_dir)
        self.health = HealthGuard(loss_has_probabilities=self.loss.probabilities)
        # The learning-rate schedule's horizon is the configured epochs (not max_steps), so a run
        # stopped early and resumed follows the same schedule.
        self.total_steps = t.epochs * self.batches.steps_per_epoch
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._window = (time.perf_counter(), self.progress.images)
        self._signals = runtime.GracefulStop()

    # ------------------------------------------------------------------ setup helpers

    def _fixed_latents(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The same latent vectors at every snapshot; a conditional grid has one row per class."""
        g = torch.Generator().manual_seed(self.cfg.train.seed + 12345)
        n = self.cfg.train.num_samples
        if self.num_classes:
            cols = 8
            z = torch.randn(cols, self.cfg.model.z_dim, generator=g).repeat(self.num_classes, 1)
            labels = torch.arange(self.num_classes).repeat_interleave(cols)
            return z.to(self.device), labels.to(self.device)
        return torch.randn(n, self.cfg.model.z_dim, generator=g).to(self.device), None

    def _restore(self, *, allow_changes: bool) -> Path:
        """Load the newest good checkpoint (refusing one that does not fit) and return its path."""
        path, tensors, state = load_latest(self.run_dir, map_location="cpu")
        if state.get("data_shape", {}).get("size") != self.data_info["size"]:
            raise ConfigError(f"{path}: checkpoint is for {state['data_shape']} images; the data now gives "
                              f"{self.data_info['size']}x{self.data_info['size']}")
        self.changes.update(check_ranks(state, self.dist.world_size, run_dir=self.run_dir, allow=allow_changes))
        try:
            self.G.load_state_dict(split_prefix(tensors, "G."))
            self.D.load_state_dict(split_prefix(tensors, "D."))
            if self.G_ema is not None:
                self.G_ema.load_state_dict(split_prefix(tensors, "G_ema.") or split_prefix(tensors, "G."))
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = next((s.strip() for s in str(exc).splitlines()[1:] if s.strip()), str(exc))
            raise CheckpointError(f"{path}: does not fit this model and optimizer ({detail})") from None
        vars(self.progress).update(vars(Progress(**state["progress"])))  # in place: the loop holds it
        self._apply_lr_scale()
        for scaler, key in ((self.scaler_d, "scaler_d"), (self.scaler_g, "scaler_g")):
            if scaler.is_enabled() and state.get(key):
                scaler.load_state_dict(state[key])
        runtime.set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)], self.device)
        if self.dist.is_main:
            print(f"resumed from {path} at step {self.progress.step}, epoch {self.progress.epoch + 1}, "
                  f"{self.progress.images / 1000:.1f} kimg", flush=True)
        return path

    # ------------------------------------------------------------------ one step

    def train_step(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        cfg, step = self.cfg, self.progress.step
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        update_g = (step + 1) % cfg.loss.n_critic == 0
        reg = step % cfg.loss.reg_every == 0
        r1, r2 = reg and cfg.loss.r1_gamma > 0, reg and cfg.loss.r2_gamma > 0
        self._schedule_lr()
        aug, amp = self.augment, self.precision.autocast(self.device)
        z = torch.randn(x.shape[0], cfg.model.z_dim, device=self.device)
        fake_labels = labels  # fakes are drawn with the real batch's labels (class-balanced like the data)
        with amp:
            with torch.set_grad_enabled(update_g):  # no G graph when only D learns this step
                fake = self.g_fast(z, fake_labels)
            # R1 / R2 differentiate D's logits with respect to the images before augmentation.
            real_in, fake_in = x.detach().requires_grad_(r1), fake.detach().requires_grad_(r2)
            d_real = (self.D if r1 else self.d_fast)(aug(real_in), labels).float()
            d_fake = (self.D if r2 else self.d_fast)(aug(fake_in), fake_labels).float()
            loss_d = self.loss.d_loss(d_real, d_fake, cfg.loss)
        if r1:  # lazy regularisation: every reg_every steps, weighted by reg_every (Karras et al. 2020)
            loss_d = loss_d + cfg.loss.r1_gamma / 2 * cfg.loss.reg_every * zero_centred_penalty(
                d_real, real_in, self.scaler_d)
        if r2:
            loss_d = loss_d + cfg.loss.r2_gamma / 2 * cfg.loss.reg_every * zero_centred_penalty(
                d_fake, fake_in, self.scaler_d)
        if self.loss.gradient_penalty:
            gp = gradient_penalty(self.D, x, fake.detach().float(), labels, scaler=self.scaler_d)
            loss_d = loss_d + cfg.loss.gp_weight * gp
        self._optimize(loss_d, self.opt_d, self.scaler_d, self.sync_d)
        # D(x), D(G(z)): probabilities for the sigmoid losses, raw critic values for the others.
        squash = torch.sigmoid if self.health.probabilities else (lambda v: v)
        self._accumulate(loss_d=loss_d, d_real=squash(d_real.detach()).mean(), d_fake=squash(d_fake.detach()).mean())

        if update_g:
            # G's loss needs D's gradient with respect to its input only: frozen, D's weights get none.
            self.D.requires_grad_(False)
            try:
                with amp:
                    real_logits = None
                    if self.loss.relativistic:  # the pairing compares with the updated D's real logits
                        with torch.no_grad():
                            real_logits = self.d_fast(aug(x), labels).float()
                    loss_g = self.loss.g_loss(self.d_fast(aug(fake), fake_labels).float(), real_logits)
                self._optimize(loss_g, self.opt_g, self.scaler_g, self.sync_g)
            finally:
                self.D.requires_grad_(True)
            self._update_ema(images=x.shape[0] * self.dist.world_size * cfg.loss.n_critic)
            self._accumulate(loss_g=loss_g)
            if self.precision.scaled:
                self._accumulate(loss_scale_g=self.scaler_g._get_scale_async())
        if self.precision.scaled:  # the current loss scales, logged: a scale that keeps falling means overflows
            self._accumulate(loss_scale_d=self.scaler_d._get_scale_async())

    @staticmethod
    def _optimize(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  sync: GradSync) -> None:
        """Backward with the gradient all-reduce overlapped, then the step. Under fp16 the loss is scaled
        and a step whose averaged gradients overflowed is skipped, alike on every rank."""
        opt.zero_grad(set_to_none=True)
        sync.arm()
        scaler.scale(loss).backward()
        sync.finish()
        scaler.step(opt)
        scaler.update()

    def _schedule_lr(self) -> None:
        """Linear decay of both learning rates over the last part of training (optim.lr_decay_start)."""
        o = self.cfg.optim
        if o.lr_decay_start >= 1.0:
            return
        frac = self.progress.step / max(self.total_steps, 1)
        ramp = min(max((frac - o.lr_decay_start) / (1.0 - o.lr_decay_start), 0.0), 1.0)
        factor = 1.0 - ramp * (1.0 - o.lr_decay_to)
        for opt, lr in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * self.progress.lr_scale * factor

    def _update_ema(self, *, images: int) -> None:
        if self.G_ema is None:
            return
        m = self.cfg.model
        beta = ema_beta(images, m.ema_kimg * 1000, images_seen=self.progress.images + images, rampup=m.ema_rampup)
        update_ema(self.G_ema, self.G, beta)

    def _accumulate(self, **values: torch.Tensor) -> None:
        """Add step values to the window's sums; each key is averaged over the steps that reported it.
        Under fp16 a step the scaler skipped (an overflow) may have an infinite loss: it is left out of
        the mean, counted on the device, so that no step waits for the host."""
        for k, v in values.items():
            v = v.detach().float()
            count: int | torch.Tensor = 1
            if self.precision.scaled:
                count = torch.isfinite(v).float()
                v = torch.where(count > 0, v, torch.zeros_like(v))
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
            self._counts[k] = self._counts[k] + count if k in self._counts else count

    # ------------------------------------------------------------------ loop

    def run(self) -> Verdict:
        """Train until the last epoch or a stop; the returned verdict says why it stopped ("" when it finished)."""
        p = self.progress
        if self.dist.is_main:
            self._write_static()
            if self.changes:
                self.log.log({"step": p.step, "event": "resume", "changed": self.changes})
        if not self.resumed:
            self.save()  # a rollback target from the very start
        self._signals.install()
        self._start_wall = time.perf_counter() - p.wall
        try:
            verdict = self._train()
        except RuntimeError as exc:
            op = runtime.nondeterministic_op(exc)
            if op is None:
                raise
            raise ConfigError(f"train.deterministic=true: {op} has no deterministic implementation on "
                              f"{self.device.type}; set train.deterministic=false, or change the setting that "
                              f"uses it (e.g. model.upsample=nearest)") from None
        except OSError as exc:  # a full or vanished disk while logging: the last checkpoint is intact
            raise GanforgeError(f"cannot write {exc.filename or self.run_dir} ({exc.strerror or exc}); free space, "
                                f"then resume from the last checkpoint: --resume {self.run_dir}") from None
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
        from ganforge.progress import EpochBar

        t, p = self.cfg.train, self.progress
        steps = self.batches.steps_per_epoch
        if t.max_steps and p.step >= t.max_steps:  # a resume past --max-steps: not one step more
            return Verdict(stop=f"reached train.max_steps={t.max_steps}")
        while p.epoch < t.epochs:
            verdict = Verdict()
            bar = EpochBar(epoch=p.epoch, epochs=t.epochs, total=steps, start=p.pos, enabled=self.dist.is_main)
            try:
                for x, labels in self.batches.epoch(p.epoch, start=p.pos):
                    seen_before = p.images
                    self._step(x, labels)
                    bar.update()
                    due = {"evaluate": self.evaluator is not None and self.evaluator.due_images(seen_before, p.images),
                           "save": t.checkpoint_steps > 0 and p.step % t.checkpoint_steps == 0,
                           "epoch_done": p.pos == steps}
                    if not (any(due.values()) or p.step % t.log_every == 0 or (t.max_steps and p.step >= t.max_steps)):
                        continue
                    verdict = self._end_window()
                    if verdict.rollback:
                        break
                    bar.show(self.log.history[-1] if self.log is not None else {})
                    self._after_window(**due, stop=bool(verdict.stop))
                    if verdict.stop:
                        return verdict
            finally:
                bar.close()
            if verdict.rollback:
                self._rollback(verdict.rollback)  # the epoch loop then restarts from the restored position
        return Verdict()

    def _step(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        p = self.progress
        self.G.train()
        self.train_step(x, labels)
        p.step += 1
        p.pos += 1
        p.images += x.shape[0] * self.dist.world_size
        p.wall = time.perf_counter() - self._start_wall

    def _end_window(self) -> Verdict:
        """Agree with the other ranks on the window (one all-reduce), log it on rank 0 and judge it."""
        t, p = self.cfg.train, self.progress
        asked = [torch.tensor(self._signals.signum == s, device=self.device) for s in (signal.SIGINT, signal.SIGTERM)]
        means, (sigint, sigterm, bad_weights) = self.dist.agree(
            self._sums, self._counts, [*asked, ~HealthGuard.all_finite([self.G, self.D])])
        self._sums, self._counts = {}, {}
        now = time.perf_counter()
        rate = (p.images - self._window[1]) / max(now - self._window[0], 1e-9)
        self._window = (now, p.images)
        # A window without a generator step (n_critic > 1) has no G loss: the key is absent, not NaN.
        record = {"step": p.step, "epoch": p.epoch + p.pos / self.batches.steps_per_epoch, "kimg": p.images / 1000,
                  **means, "images_per_s": rate, "time": p.wall}
        rollback = self.health.check(record, weights_finite=not bad_weights)
        if self.log is not None and not rollback:
            self.log.log(record)
        if sigint or sigterm:
            signum = signal.SIGTERM if sigterm else signal.SIGINT
            return Verdict(rollback, stop=f"received {signal.Signals(signum).name}", exit_code=128 + signum)
        if t.max_steps and p.step >= t.max_steps:
            return Verdict(rollback, stop=f"reached train.max_steps={t.max_steps}")
        return Verdict(rollback)

    def _after_window(self, *, evaluate: bool, save: bool, epoch_done: bool, stop: bool) -> None:
        """What a healthy window end calls for: evaluation, epoch end (samples), checkpoint."""
        t, p = self.cfg.train, self.progress
        if evaluate:
            self._evaluate(epoch=p.epoch + p.pos / self.batches.steps_per_epoch)
        if epoch_done:
            p.epoch, p.pos = p.epoch + 1, 0
        last = epoch_done and p.epoch == t.epochs
        save = save or stop or last or (epoch_done and p.epoch % t.checkpoint_every == 0)
        if epoch_done or save:  # per-rank batch-norm statistics, averaged before samples and checkpoints
            self.dist.average_buffers(*self._models())
        if self.log is not None and (stop or last or (epoch_done and p.epoch % t.sample_every == 0)):
            self._write_samples()
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
        self._apply_lr_scale()
        self._sums, self._counts = {}, {}
        self._start_wall = time.perf_counter() - p.wall
        if self.log is not None:
            self.log.truncate(p.step)
            self.log.log({"step": p.step, "event": "rollback", "reason": reason, "restored": str(path),
                          "lr_scale": lr_scale})
        warnings.warn(f"{reason}: rolled back to {path.name} and scaled the learning rates by {lr_scale:g} "
                      f"(rollback {rollbacks} of {t.max_rollbacks})", stacklevel=2)

    def _apply_lr_scale(self) -> None:
        for opt, lr in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * self.progress.lr_scale

    def _models(self) -> list[nn.Module]:
        return [m for m in (self.G, self.D, self.G_ema) if m is not None]

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        g = self.G_ema if self.G_ema is not None else self.G
        was_training = g.training
        g.eval()
        out = torch.cat([g(z[i : i + 256], None if labels is None else labels[i : i + 256])
                         for i in range(0, len(z), 256)])
        g.train(was_training)
        return out.float()

    def _write_samples(self) -> None:
        p = self.progress
        images = self.sample(self.fixed_z, self.fixed_labels)
        if p.images >= 50_000:  # an untrained G is legitimately near-constant; judge it only later
            self.health.check_diversity(images[:64], self.real_preview[:64].float() / 127.5 - 1, step=p.step)
        label = p.epoch if p.pos == 0 else p.epoch + 1  # the epoch these weights finished or are inside
        self.log.save_grid(images, f"epoch_{label:04d}.png", step=p.step, nrow=8)
        if self.num_classes:
            self.log.save_grid(images, "classes.png", step=p.step, nrow=8, tag="classes")
        self.log.plot_losses(probabilities=self.health.probabilities)

    def _evaluate(self, *, epoch: float) -> None:
        """Log a small-N evaluation; keep the checkpoint with the lowest FID as checkpoints/best."""
        from ganforge.periodic_eval import improved

        p = self.progress
        g = self.G_ema if self.G_ema is not None else self.G
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
        # Every rank's RNG goes into the checkpoint so a resumed multi-rank run draws the same noise.
        if name is None:  # a named copy (best) is written by rank 0 alone
            states = self.dist.gather(runtime.rng_state(self.device))
            self.dist.check_in_sync(self.G, self.D)
        else:
            states = [runtime.rng_state(self.device)]
        if not self.dist.is_main:
            return None
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors.update({f"D.{k}": v for k, v in self.D.state_dict().items()})
        if self.G_ema is not None:
            tensors.update({f"G_ema.{k}": v for k, v in self.G_ema.state_dict().items()})
        state = {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
                 "progress": vars(self.progress).copy(), "rng": states, "config": to_dict(self.cfg),
                 "data_shape": self.data_info, "version": __version__, "world_size": self.dist.world_size}
        return save_checkpoint(self.run_dir, step=self.progress.step, tensors=tensors, state=state,
                               keep=self.cfg.train.keep_checkpoints, name=name)

    def _write_static(self) -> None:
        save_yaml(self.cfg, self.run_dir / "config.yaml")
        if self.log is not None and not (self.run_dir / "samples" / "real.png").exists():
            real = self.real_preview.float().div(127.5).sub(1)
            self.log.save_grid(real, "real.png", step=0, tag="real")
