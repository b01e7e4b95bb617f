"""BAM, the Bottleneck Attention Module (Park et al., 2018), laid out as Jongchan/attention-module ``bam.py``.

Placed *between* stages (after layer1..3 of a ResNet, as ``bam1..3``). Two branches on the same input:

* channel: global average pool -> FC(C, C/r) -> BN1d -> ReLU -> FC(C/r, C)   -> Mc (N, C, 1, 1)
* spatial: 1x1 reduce -> BN -> ReLU -> 2 x [3x3 dilation 4 -> BN -> ReLU] -> 1x1 to one map -> Ms (N, 1, H, W)

The paper combines them as ``x * (1 + sigmoid(Mc + Ms))`` (``combine="sum"``, the default here); the
official code multiplies, ``x * (1 + sigmoid(Mc * Ms))`` (``combine="product"``). Submodule names follow
``bam.py`` (``channel_att.gate_c.gate_c_fc_0`` ... ``spatial_att.gate_s.gate_s_conv_final``) so its
checkpoints load; the final sigmoid is the module ``gate``.
"""
from __future__ import annotations

import torch
from torch import nn


class BAMChannelGate(nn.Module):
    """Mc: one value per channel from the globally pooled descriptor."""

    def __init__(self, channels: int, reduction: int = 16, num_layers: int = 1) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", nn.Flatten())
        dims = [channels] + [hidden] * num_layers + [channels]
        for i in range(len(dims) - 2):
            self.gate_c.add_module(f"gate_c_fc_{i}", nn.Linear(dims[i], dims[i + 1]))
            self.gate_c.add_module(f"gate_c_bn_{i + 1}", nn.BatchNorm1d(dims[i + 1]))
            self.gate_c.add_module(f"gate_c_relu_{i + 1}", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(dims[-2], dims[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_c(x.mean(dim=(2, 3), keepdim=True)).view(x.shape[0], x.shape[1], 1, 1)


class BAMSpatialGate(nn.Module):
    """Ms: one value per position from dilated convolutions on a reduced feature map."""

    def __init__(self, channels: int, reduction: int = 16, dilation_conv_num: int = 2, dilation: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, kernel_size=1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(hidden, hidden, 3, padding=dilation,
                                                                    dilation=dilation))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x)


class BAM(nn.Module):
    """x * (1 + sigmoid(Mc (+ or *) Ms)); the gate's output (N, C, H, W) is the full 3-D attention."""

    attention_type = "bam"

    def __init__(self, channels: int, reduction: int = 16, combine: str = "sum") -> None:
        super().__init__()
        if combine not in ("sum", "product"):
            raise ValueError("combine must be 'sum' (paper) or 'product' (official code)")
        self.combine = combine
        self.channel_att = BAMChannelGate(channels, reduction)
        self.spatial_att = BAMSpatialGate(channels, reduction)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc, ms = self.channel_att(x), self.spatial_att(x)
        att = self.gate(mc + ms if self.combine == "sum" else mc * ms)
        return x * (1 + att)
