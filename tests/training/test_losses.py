"""Losses as functions of logits, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganforge.config import LossConfig
from ganforge.training.losses import LOSSES, gradient_penalty, zero_centred_penalty


def test_bce_with_smoothing_matches_formula():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    cfg = LossConfig(label_smoothing=0.1)
    sig = torch.sigmoid
    expected = -(0.9 * torch.log(sig(real)) + 0.1 * torch.log(1 - sig(real))).mean() - torch.log(1 - sig(fake)).mean()
    assert torch.allclose(LOSSES.get("bce").d_loss(real, fake, cfg), expected)
    assert torch.allclose(LOSSES.get("bce").g_loss(fake), -torch.log(sig(fake)).mean())


def test_minimax_generator_loss_is_saturating():
    fake = torch.tensor([-3.0, 0.0])
    assert torch.allclose(LOSSES.get("minimax").g_loss(fake), torch.log(1 - torch.sigmoid(fake)).mean())


def test_label_flip_swaps_targets():
    torch.manual_seed(0)
    real, fake = torch.full((4000,), 5.0), torch.full((4000,), -5.0)
    clean = LOSSES.get("bce").d_loss(real, fake, LossConfig())
    flipped = LOSSES.get("bce").d_loss(real, fake, LossConfig(label_flip=0.3))
    assert flipped > clean + 2.0  # about 30% of targets now disagree with confident logits


@pytest.mark.parametrize("name, real, fake, d_expected, g_expected", [
    # hinge: relu(1 - 0.5) + relu(1 + (-1)) = 0.5; G: -(-1) = 1
    ("hinge", 0.5, -1.0, 0.5, 1.0),
    # lsgan: 0.5 * ((0.5 - 1)^2 + 0.2^2) = 0.145; G: 0.5 * (0.2 - 1)^2 = 0.32
    ("lsgan", 0.5, 0.2, 0.145, 0.32),
    # wgan: D(fake) - D(real) = -0.3; G: -D(fake) = -0.2
    ("wgan-gp", 0.5, 0.2, -0.3, -0.2),
])
def test_other_losses(name, real, fake, d_expected, g_expected):
    loss = LOSSES.get(name)
    real_t, fake_t = torch.tensor([real]), torch.tensor([fake])
    assert math.isclose(loss.d_loss(real_t, fake_t, LossConfig()).item(), d_expected, rel_tol=1e-6)
    assert math.isclose(loss.g_loss(fake_t).item(), g_expected, rel_tol=1e-6)


def test_gradient_penalty_on_linear_critic_matches_hand_value():
    # D(x) = w.x + b has gradient w everywhere, so the penalty is (||w|| - 1)^2 whatever alpha is.
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 0.0]]))  # ||w|| = 3
    real, fake = torch.randn(6, 4), torch.randn(6, 4)
    gp = gradient_penalty(lambda x, labels: critic(x).flatten(), real, fake)
    assert math.isclose(gp.item(), (3.0 - 1.0) ** 2, rel_tol=1e-6)


def test_relativistic_pairing_loss_matches_formula():
    # RpGAN: D minimises softplus(D(fake) - D(real)), G softplus(D(real) - D(fake)), pair by pair.
    loss = LOSSES.get("rpgan")
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    assert loss.relativistic and not loss.probabilities
    assert torch.allclose(loss.d_loss(real, fake, LossConfig()), torch.log1p(torch.exp(fake - real)).mean())
    assert torch.allclose(loss.g_loss(fake, real), torch.log1p(torch.exp(real - fake)).mean())
    # Shifting every logit by the same amount changes nothing: only differences count.
    assert torch.allclose(loss.d_loss(real + 7, fake + 7, LossConfig()), loss.d_loss(real, fake, LossConfig()))


def test_r1_r2_on_linear_critic_match_hand_value():
    # D(x) = w.x + b: grad_x D = w for every image, so E||grad||^2 = ||w||^2 = 9 for real and fake alike,
    # and the penalty the trainer adds is gamma / 2 * 9.
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 0.0]]))
    for images in (torch.randn(6, 4), torch.rand(6, 4)):
        critic.zero_grad()
        x = images.requires_grad_(True)
        penalty = zero_centred_penalty(critic(x).flatten(), x)
        assert math.isclose(penalty.item(), 9.0, rel_tol=1e-6)
        penalty.backward()  # the graph is kept: the penalty can be minimised through D's weights
        assert torch.allclose(critic.weight.grad, 2 * critic.weight.detach())


def test_r1_is_zero_centred_not_one_centred():
    # A critic with unit gradient norm pays nothing under WGAN-GP's penalty but 1 under R1.
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8]]))
    x = torch.randn(3, 2, requires_grad=True)
    assert math.isclose(zero_centred_penalty(critic(x).flatten(), x).item(), 1.0, rel_tol=1e-6)
    assert gradient_penalty(lambda v, labels: critic(v).flatten(), x.detach(), torch.randn(3, 2)).item() < 1e-10
