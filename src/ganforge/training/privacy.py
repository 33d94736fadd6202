"""Differentially private training: DP-SGD (Abadi et al. 2016) on the discriminator, the only network
that reads real images, so the generator is private by post-processing (the DPGAN construction of Xie et
al. 2018, as revisited by Bie, Kamath and Zhang 2023, "Private GANs, Revisited"). Opacus computes the
per-sample gradients, clips them, adds the noise and does all the accounting; nothing here computes a
privacy bound itself.

One D step (`PrivateDiscriminator.step`):
1. the real batch, Poisson-sampled (`data.batches.PoissonBatches`), goes through D with Opacus's
   per-sample hooks on (GradSampleModule); the backward of D's real-image term gives every image's
   own gradient (its label, for a conditional D, rides along in the same gradient);
2. `DPOptimizer.pre_step` clips each to `privacy.max_grad_norm` C, sums them, adds N(0, sigma^2 C^2)
   once and divides by the expected batch size q N;
3. a generated batch of the expected size, its labels drawn uniformly (public), goes through D with
   the hooks on too; each generated image's gradient is clipped to the same C (Opacus's
   `clip_and_accumulate`), summed and divided by q N, with no noise, and added. The generated term is
   a function of G and D alone, both already private, so it costs no privacy and needs no noise:
   running it through the DP optimizer's noise too, as a known Opacus GAN example does, charges the
   budget for public data. It is clipped all the same so that the two halves of D's loss weigh alike:
   added unclipped (`privacy.clip_generated=false`), the generated term's gradients were many times
   the clipped real ones, D learned to reject generated images long before it learned what a digit
   is, its score on them fell below 0.01 within 250 D steps and G collapsed to one stroke for every
   class (benchmarks/records/privacy/mnist-dp-first-try.json);
4. D's own optimizer steps, and the ledger counts one subsampled Gaussian mechanism (sigma, q).

D's loss is split into its real and its generated term, which only a separable objective allows:
relativistic losses (rpgan) and the gradient penalties are refused (`check_config`).

The ledger (training/ledger.py: Opacus's RDP or PRV accountant) is checkpointed with the run; it never goes back: a
rollback restores the weights but keeps the steps taken since, whose outcome decided it. The noise
and the batches are drawn from a secret seed (kept in checkpoints, never in config.yaml) and the
ledger's step count, so a resume continues both exactly.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ganforge.config import Config
from ganforge.errors import ConfigError
from ganforge.models.common import label_parameters
from ganforge.training import ledger
from ganforge.training.dsteps import DSteps
from ganforge.training.losses import LOSSES

NOISE, BATCHES = 1, 2  # the two streams drawn from the secret seed


def check_config(cfg: Config, world_size: int) -> None:
    """What a private run refuses from its config alone, in one line each, before anything is built."""
    if not cfg.privacy.enabled:
        return
    m, lo, t = cfg.model, cfg.loss, cfg.train
    loss = LOSSES.get(lo.name)
    refusals = [
        (world_size > 1, f"privacy.enabled=true runs on one process; torchrun started {world_size}: Poisson sampling "
                         "and the accountant assume one process drawing every batch (run it without torchrun)"),
        (t.compile, "privacy.enabled=true: train.compile=true hides the layers Opacus's per-sample hooks attach to; "
                    "set train.compile=false"),
        (t.amp in ("fp16", "bf16"), f"privacy.enabled=true: train.amp={t.amp} is not supported (loss scaling would "
                                    "scale the clipped gradients, half precision the per-sample norms); set "
                                    "train.amp=off or auto (fp32 for a private run)"),
        (loss.gradient_penalty or lo.r1_gamma > 0 or lo.r2_gamma > 0,
         f"privacy.enabled=true: loss.name={lo.name} / loss.r1_gamma / loss.r2_gamma penalise the gradient with "
         "respect to each real image, outside the per-sample clipping; use loss.name=bce, hinge, lsgan or minimax "
         "with loss.r1_gamma=0 and loss.r2_gamma=0"),
        (loss.relativistic, f"privacy.enabled=true: loss.name={lo.name} pairs every generated logit with a real "
                            "one, so its generated term carries private data; use bce, hinge, lsgan or minimax"),
        (m.d_sn, "privacy.enabled=true: model.d_sn=true parametrises D's weights (Opacus has no per-sample gradients "
                 "for them) and its power iteration reads the whole batch; set model.d_sn=false"),
        (m.d_mbstd > 0, "privacy.enabled=true: model.d_mbstd mixes the images of a batch, so one image's gradient "
                        "depends on the others; set model.d_mbstd=0"),
        (t.eval_every > 0 or t.eval_every_kimg > 0,
         "privacy.enabled=true: train.eval_every / train.eval_every_kimg compare with the private training set and "
         "pick checkpoints/best by it, outside the guarantee; set both to 0 and run `ganforge eval` afterwards"),
        (cfg.data.ada_target > 0, "privacy.enabled=true: data.ada_target tunes the augmentation from the sign of D's "
                                  "outputs on the real batches, a statistic outside the accountant; set "
                                  "data.ada_target=0 (a fixed data.augment is allowed)"),
    ]
    for refused, line in refusals:
        if refused:
            raise ConfigError(line)


def check_discriminator(cfg: Config, *, channels: int, size: int, num_classes: int) -> None:
    """Opacus's ModuleValidator on D (built on the meta device: no memory), translated into the config key."""
    if not cfg.privacy.enabled:
        return
    from opacus.validators import ModuleValidator

    from ganforge.models import build_models

    with torch.device("meta"):
        _, d = build_models(cfg.model, channels=channels, size=size, num_classes=num_classes)
    errors = ModuleValidator.validate(d, strict=False)
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in d.modules()):
        raise ConfigError(f"privacy.enabled=true: the discriminator has batch norm (model.d_norm={cfg.model.d_norm}, "
                          f"arch {cfg.model.arch_d or cfg.model.arch}), which mixes the images of a batch; Opacus "
                          f"gives no per-sample gradients through it: set model.d_norm=none or layer")
    if cfg.privacy.label_clip and not label_parameters(d):
        m = cfg.model
        raise ConfigError(f"privacy.label_clip={cfg.privacy.label_clip:g}: this discriminator has no parameters of "
                          f"its own for the label (an unconditional model, or model.d_condition={m.d_condition} "
                          f"on arch {m.arch_d or m.arch}); set privacy.label_clip=0")
    if errors:
        raise ConfigError(f"privacy.enabled=true: Opacus cannot give per-sample gradients for this discriminator "
                          f"(arch {cfg.model.arch_d or cfg.model.arch}): {str(errors[0]).splitlines()[0]}")


def check_data(cfg: Config, n: int) -> None:
    """The batch and delta must be below N and 1/N: a delta of 1/N allows publishing one training image outright."""
    p = cfg.privacy
    if p.enabled and cfg.train.batch_size >= n:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be below the {n:,} training images of a "
                          f"private run (Poisson sampling draws each image with probability batch / N < 1); "
                          f"use e.g. {max(1, n // 8)}")
    if p.enabled and p.delta >= 1.0 / n:
        raise ConfigError(f"privacy.delta={p.delta:g} must be below 1/N = {1.0 / n:.3g} for the {n:,} training images "
                          f"(a delta of 1/N allows publishing one of them outright); use e.g. {0.1 / n:.1g}")


# ----------------------------------------------------------------------------- clipping the label apart


def split_norm(c: float, label_share: float) -> list[float]:
    """The clipping norms of the two groups, [the rest of D, the label parameters], whose squares add up to
    C^2: the per-image gradient's whole norm stays at most C, the sensitivity the noise is drawn for."""
    return [c * (1.0 - label_share) ** 0.5, c * label_share**0.5]


# ----------------------------------------------------------------------------- the D step


@contextlib.contextmanager
def _quiet_hooks() -> Iterator[None]:
    """D's first layer gets no input gradient, which PyTorch's full backward hooks warn about: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class PrivateDiscriminator:
    """D's DP-SGD step, the D-step schedule and the ledger; a stateful entry of the checkpoint."""

    def __init__(self, cfg: Config, plan: ledger.Plan, *, objective, D: nn.Module, opt_d: torch.optim.Optimizer,
                 num_classes: int, device: torch.device, secret: int):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.cfg, self.plan, self.objective, self.D = cfg, plan, objective, D
        self.num_classes, self.device = num_classes, device
        self.ledger = ledger.Ledger(plan, secret=secret)
        p = cfg.privacy
        self.schedule = DSteps(cfg.loss.n_critic, adaptive=p.adaptive_d_steps, threshold=p.d_steps_threshold,
                               grace=p.d_steps_grace, beta=p.d_steps_beta)
        for mod in D.modules():  # Opacus's backward hooks forbid in-place ops on the outputs of hooked layers
            if getattr(mod, "inplace", False):
                mod.inplace = False  # type: ignore[assignment]
        # The hooks live on D's layers; D itself (its state_dict, its callers) stays as it was.
        self.hooks = GradSampleModule(D, batch_first=True, loss_reduction="mean", strict=True)
        self.hooks.disable_hooks()
        self.noise = torch.Generator(device=device)
        kwargs: dict[str, Any] = dict(noise_multiplier=plan.noise_multiplier, loss_reduction="mean",
                                      expected_batch_size=plan.expected_batch_size, generator=self.noise)
        if p.label_clip:
            from ganforge.training.dp_clipping import GroupClippedDPOptimizer

            labelled = {id(q) for q in label_parameters(D)}
            groups = [int(id(q) in labelled) for g in opt_d.param_groups for q in g["params"]]
            self.dp = GroupClippedDPOptimizer(opt_d, groups=groups,
                                              max_grad_norms=split_norm(plan.max_grad_norm, p.label_clip), **kwargs)
        else:
            self.dp = DPOptimizer(opt_d, max_grad_norm=plan.max_grad_norm, **kwargs)

    def step(self, x: torch.Tensor, labels: Optional[torch.Tensor], *,
             train_g: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], dict[str, torch.Tensor]]:
        """One D step; (the generated images, their labels, what the window logs: nothing of the real batch)."""
        obj, b = self.objective, self.plan.expected_batch_size
        fake_labels = torch.randint(self.num_classes, (b,), device=self.device) if self.num_classes else None
        with torch.set_grad_enabled(train_g):  # G's graph only when G learns this step
            fake = obj.G(torch.randn(b, obj.z_dim, device=self.device), fake_labels)
        self.dp.zero_grad(set_to_none=True)
        self.noise.manual_seed(self.ledger.seed(NOISE))
        with _quiet_hooks():
            self.real_term(x, labels)
            self.dp.pre_step()  # clip each image's gradient, sum, add N(0, sigma^2 C^2) once, divide by q N
            d_fake = self.generated_term(fake.detach(), fake_labels)
        self.dp.original_optimizer.step()
        self.ledger.step()
        self.schedule.d_step(d_fake, train_g=train_g)
        return fake, fake_labels, {"d_fake": obj.report(d_fake.detach()).mean()}

    def real_term(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        """Per-sample gradients (`p.grad_sample`) of D's real-image term, by Opacus's hooks."""
        if not x.shape[0]:  # an empty Poisson batch: no image, the noise alone
            for p in self.dp.params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)  # pyright: ignore
            return
        self.hooks.enable_hooks()
        try:
            with _quiet_hooks():
                # Contiguous: Opacus's per-sample convolution gradients misread channels_last (setup.models).
                real, class_loss = self.objective.judge(self.D, self.objective.augment(x).contiguous(), labels,
                                                        weight=self.cfg.loss.class_weight)
                # With the real logits detached in the generated slot, only the real term has a gradient;
                # a class head's cross-entropy on each image's label rides in that image's gradient.
                (self.objective.loss.d_loss(real, real.detach(), self.cfg.loss) + class_loss).backward()
        finally:
            self.hooks.disable_hooks()

    def generated_term(self, fake: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Add the gradient of D's generated-image term to the real term's noised one in `p.grad`; D's logits.

        Public data: no noise and no privacy charged. Clipped per image to the same C unless
        `privacy.clip_generated=false`, so that neither half of D's loss outweighs the other."""
        obj, b, clip = self.objective, self.plan.expected_batch_size, self.cfg.privacy.clip_generated
        real_grads = [p.grad for p in self.dp.params]
        self.dp.zero_grad(set_to_none=True)
        if clip:
            self.hooks.enable_hooks()
        try:
            # contiguous: see setup.models
            d_fake, class_loss = obj.judge(self.D, obj.augment(fake).contiguous(), labels, weight=1.0)
            # With the generated logits detached in the real slot, only the generated term has a gradient.
            # A class head learns from real images only (objective.py); times 0 its loss still gives the
            # head the per-sample gradients (zeros) Opacus's clipping asks of every parameter.
            (obj.loss.d_loss(d_fake.detach(), d_fake, self.cfg.loss) + 0.0 * class_loss).backward()
        finally:
            self.hooks.disable_hooks()
        if clip:
            self.dp.clip_and_accumulate()  # Opacus's per-sample clipping into p.summed_grad; no noise
        for p, real in zip(self.dp.params, real_grads):
            fake_grad = p.summed_grad.view_as(p) / b if clip else p.grad  # pyright: ignore[reportAttributeAccessIssue]
            p.grad = fake_grad if real is None else real if fake_grad is None else real + fake_grad
        return d_fake

    @property
    def rate(self) -> int:
        """D steps per G step now."""
        return self.schedule.rate

    def g_step_due(self) -> bool:
        return self.schedule.g_step_due()

    def exhausted(self, step: int, total_steps: int) -> str:
        """Why training must stop before D step `step` + 1 (the budget would be exceeded), or "" (also when
        no step is left of the `total_steps` planned)."""
        if self.ledger.steps < self.plan.budget_steps or step >= total_steps:
            return ""
        return (f"privacy budget spent: epsilon={self.ledger.epsilon():.3g} at delta={self.plan.delta:g} after "
                f"{self.ledger.steps:,} D steps (privacy.epsilon={self.plan.epsilon_budget:g})")

    def record(self) -> dict:
        """The window's privacy entries: epsilon spent (metrics.jsonl and TensorBoard), the D-step rate."""
        return {"epsilon": self.ledger.epsilon(), **({"d_steps": self.rate} if self.schedule.adaptive else {})}

    def write_record(self, run_dir: Path, *, step: int) -> None:
        """privacy.json beside config.yaml: the plan and the privacy spent, for the other commands."""
        ledger.write_record(run_dir, self.plan, self.ledger, step=step)

    def state_dict(self) -> dict:
        return {"ledger": self.ledger.state_dict(), "d_steps": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.ledger.load_state_dict(state["ledger"])
        self.schedule.load_state_dict(state["d_steps"])


def build(cfg: Config, run_dir: Path, n: int, **parts) -> Optional[PrivateDiscriminator]:
    """The private D step for a run with privacy.enabled (None otherwise); sigma is written into the config."""
    p = cfg.privacy
    if not p.enabled:
        return None
    plan = ledger.make_plan(cfg, n, run_dir)
    p.noise_multiplier = plan.noise_multiplier  # so config.yaml records it, and a resume finds it unchanged
    if p.sampling_seed:
        warnings.warn(f"privacy.sampling_seed={p.sampling_seed}: the noise can be recomputed by anyone who reads "
                      "config.yaml; use it for tests and reproductions only", stacklevel=2)
    return PrivateDiscriminator(cfg, plan, secret=p.sampling_seed or secrets.randbits(63), **parts)
