"""Residual blocks: SK basic and bottleneck blocks (timm's SK-ResNet / SKNet), and the SE bottleneck."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from sk_deploy.models.layers import ConvNormAct, SKConv, SqueezeExcite


def bottleneck_width(planes: int, base_width: int, cardinality: int) -> int:
    """Channels of a bottleneck's 3x3 (ResNeXt: ``planes * base_width / 64`` per group, times the groups)."""
    return int(math.floor(planes * (base_width / 64)) * cardinality)


class ResidualBlock(nn.Module):
    """``act(residual(x) + shortcut(x))``: what the three blocks share. Subclasses build their layers under timm's
    names, name the BatchNorm that ends the branch (``last_norm_name``) and the final activation (``act_name``)."""

    expansion: ClassVar[int]
    last_norm_name: ClassVar[str]
    act_name: ClassVar[str] = "act"
    downsample: nn.Module | None

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch (its scale sets the branch's share of the sum)."""
        return self.get_submodule(self.last_norm_name)  # type: ignore[return-value]

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.get_submodule(self.act_name)(self.residual(x) + shortcut)


class SKBasicBlock(ResidualBlock):
    """Basic block whose first 3x3 is an SK convolution (timm ``SelectiveKernelBasic``)."""

    last_norm_name = "conv2.bn"
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, sk_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("SKBasicBlock supports only cardinality=1 and base_width=64")
        self.conv1 = SKConv(inplanes, planes, stride=stride, **(sk_kwargs or {}))
        self.conv2 = ConvNormAct(planes, planes * self.expansion, 3, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class SKBottleneck(ResidualBlock):
    """Bottleneck whose 3x3 is a grouped SK convolution (timm ``SelectiveKernelBottleneck``, SKNet)."""

    expansion = 4
    last_norm_name = "conv3.bn"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, sk_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        width = bottleneck_width(planes, base_width, cardinality)
        self.conv1 = ConvNormAct(inplanes, width, 1)
        self.conv2 = SKConv(width, width, stride=stride, groups=cardinality, **(sk_kwargs or {}))
        self.conv3 = ConvNormAct(width, planes * self.expansion, 1, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class SEBottleneck(ResidualBlock):
    """ResNet(-eXt) bottleneck with SE after the last 1x1, before the residual add (timm ``Bottleneck``)."""

    expansion = 4
    last_norm_name = "bn3"
    act_name = "act3"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, se_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        width = bottleneck_width(planes, base_width, cardinality)
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

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.se(self.bn3(self.conv3(x)))
