"""Residual blocks: SK basic and bottleneck blocks (timm's SK-ResNet / SKNet), and the SE bottleneck."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sk_deploy.models.layers import ConvNormAct, SKConv, SqueezeExcite


class SKBasicBlock(nn.Module):
    """Basic block whose first 3x3 is an SK convolution (timm ``SelectiveKernelBasic``)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        sk_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("SKBasicBlock supports only cardinality=1 and base_width=64")
        self.conv1 = SKConv(inplanes, planes, stride=stride, **(sk_kwargs or {}))
        self.conv2 = ConvNormAct(planes, planes * self.expansion, 3, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch (its scale sets the branch's share of the sum)."""
        return self.conv2.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


class SKBottleneck(nn.Module):
    """Bottleneck whose 3x3 is a grouped SK convolution (timm ``SelectiveKernelBottleneck``, SKNet)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        sk_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        self.conv1 = ConvNormAct(inplanes, width, 1)
        self.conv2 = SKConv(width, width, stride=stride, groups=cardinality, **(sk_kwargs or {}))
        self.conv3 = ConvNormAct(width, planes * self.expansion, 1, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch (its scale sets the branch's share of the sum)."""
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class SEBottleneck(nn.Module):
    """ResNet(-eXt) bottleneck with SE after the last 1x1, before the residual add (timm ``Bottleneck``)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        se_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, outplanes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SqueezeExcite(outplanes, **(se_kwargs or {}))
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch (its scale sets the branch's share of the sum)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(self.bn3(self.conv3(x)))
        return self.act3(x + shortcut)
