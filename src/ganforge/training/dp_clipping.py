"""DP-SGD with each image's gradient clipped per group of parameters, on Opacus's DP optimizer.

Abadi et al. 2016 clip each image's whole gradient to one norm C. Under that one norm, a class
head's cross-entropy had 1.3 % of each image's clipped gradient on mnist-dp (D's adversarial term's
gradient was about 70 times larger), well below the noise: the label was crowded out. Clipping each
group of parameters to its own norm C_g, with the C_g^2 adding up to C^2, still bounds every image's
whole gradient by C, so the same noise N(0, sigma^2 C^2) gives the same guarantee and the ledger is
unchanged (Opacus's `add_noise` and accountant, untouched); what changes is that the label's share of
the norm is set rather than left to the ratio of the two gradients. Opacus's per-layer clipping
(McMahan et al. 2018) is the same construction with one group per tensor.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed


class GroupClippedDPOptimizer(DPOptimizer):
    """`groups[i]` names the group of the optimizer's i-th parameter, `max_grad_norms[g]` its norm."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, groups: list[int], max_grad_norms: list[float],
                 **kwargs):
        self.groups, self.max_grad_norms = groups, max_grad_norms
        super().__init__(optimizer, max_grad_norm=sum(c * c for c in max_grad_norms) ** 0.5, **kwargs)
        if len(groups) != len(self.params) or not all(0 <= g < len(max_grad_norms) for g in groups):
            raise ValueError(f"groups: one of 0..{len(max_grad_norms) - 1} for each of the {len(self.params)} "
                             f"parameters, not {groups}")

    def clip_and_accumulate(self) -> None:
        """Each image's gradient clipped group by group into `p.summed_grad` (Opacus's contract)."""
        samples = []
        for q in self.params:
            _check_processed_flag(q.grad_sample)  # pyright: ignore[reportAttributeAccessIssue]
            samples.append(self._get_flat_grad_sample(q))
        b = len(samples[0])
        squares = torch.zeros(len(self.max_grad_norms), b, device=samples[0].device)  # [groups, B]
        for g, s in zip(self.groups, samples):
            squares[g] += s.flatten(1).float().pow(2).sum(dim=1)
        limits = torch.tensor(self.max_grad_norms, device=squares.device)[:, None]
        factors = (limits / (squares.sqrt() + 1e-6)).clamp(max=1.0)  # [groups, B]
        for q, g, s in zip(self.params, self.groups, samples):
            grad = torch.einsum("i,i...", factors[g].to(q.dtype), s.to(q.dtype))  # [B, ...] -> the sum
            q.summed_grad = grad if q.summed_grad is None else q.summed_grad + grad  # pyright: ignore
            _mark_as_processed(q.grad_sample)  # pyright: ignore[reportAttributeAccessIssue]
