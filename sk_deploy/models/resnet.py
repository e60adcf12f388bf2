"""The ResNet trunk shared by every network here: stem, four stages of residual blocks, classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ResNet(nn.Module):
    """ResNet / ResNeXt trunk with pluggable blocks, module names as in timm's ``ResNet``.

    Stem: 7x7/2 conv (64), BN, ReLU, 3x3/2 max-pool. Stages ``layer1..layer4`` of widths 64..512 (times the
    block's expansion), the first block of stages 2-4 striding by 2. Head: global average pool, ``fc``.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
        block_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, num_blocks in enumerate(layers):
            planes = 64 * 2**index
            stride = 1 if index == 0 else 2
            outplanes = planes * block.expansion
            blocks = []
            for b in range(num_blocks):
                downsample = None
                if b == 0 and (stride != 1 or inplanes != outplanes):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
                        nn.BatchNorm2d(outplanes),
                    )
                blocks.append(
                    block(
                        inplanes, planes, stride=stride if b == 0 else 1, downsample=downsample,
                        cardinality=cardinality, base_width=base_width, **(block_args or {}),
                    )
                )
                inplanes = outplanes
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: (N, 3, H, W) -> (N, num_features, H/32, W/32)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.global_pool(self.forward_features(x)), 1))
