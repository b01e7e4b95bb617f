"""The one ResNet-50 the issue-28 equality tests and benchmark share: torchvision's, random weights, random
BatchNorm statistics (with the default ones every BatchNorm bias is 0 and FullGrad's bias terms would go untested),
so the tests and the benchmark compare the same network."""
from __future__ import annotations

import torch
import torchvision


def resnet50_random(seed: int = 0) -> torch.nn.Module:
    """torchvision's ResNet-50 in eval mode with seeded random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net
