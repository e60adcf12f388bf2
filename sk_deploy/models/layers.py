"""Building blocks of SKNet and SENet, named as timm names them so timm checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below ``min_value`` (default: ``divisor``).

    This is timm's rule for attention widths; with ``round_limit`` it never rounds down by more than 10%.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Module):
    """Convolution (no bias), BatchNorm, optional ReLU. Padding keeps the size for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        apply_act: bool = True,
    ) -> None:
        super().__init__()
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SKAttention(nn.Module):
    """Fuse and Select of a Selective Kernel convolution: branch weights from the summed branch maps.

    Input (N, M, C, H, W), the stacked branch outputs; output (N, M, C, 1, 1), a softmax across the
    M branches for each channel.
    """

    def __init__(self, channels: int, num_paths: int = 2, attn_channels: int = 32) -> None:
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(1).mean((2, 3), keepdim=True)
        z = self.act(self.bn(self.fc_reduce(s)))
        logits = self.fc_select(z)
        n, mc, h, w = logits.shape
        return torch.softmax(logits.view(n, self.num_paths, mc // self.num_paths, h, w), dim=1)


class SKConv(nn.Module):
    """Selective Kernel convolution (Li et al., 2019): Split, Fuse, Select.

    Split: ``num_paths`` (M) grouped 3x3 convolutions with dilation 1..M, each with BN, ReLU and the
    block's stride. Fuse: sum, global average pool, 1x1 conv to d channels, BN, ReLU. Select: one 1x1 conv
    to M*C logits, softmax across branches per channel, weighted sum of the branch maps.

    d is ``attn_channels`` when given, else ``make_divisible(C * rd_ratio, rd_divisor)``, which equals the
    paper's max(C/r, L) with r = 1/rd_ratio and L = rd_divisor for every width the networks use.
    ``split_input`` feeds each branch its own slice of the input channels (timm's SK-ResNet layout).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        stride: int = 1,
        num_paths: int = 2,
        groups: int = 1,
        rd_ratio: float = 1 / 16,
        rd_divisor: int = 32,
        attn_channels: int | None = None,
        split_input: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        if num_paths < 2:
            raise ValueError(f"an SK convolution needs at least 2 paths, got {num_paths}")
        if split_input and in_channels % num_paths:
            raise ValueError(f"split_input needs in_channels ({in_channels}) divisible by {num_paths} paths")
        self.num_paths = num_paths
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        path_in = in_channels // num_paths if split_input else in_channels
        groups = min(out_channels, groups)
        self.paths = nn.ModuleList(
            ConvNormAct(path_in, out_channels, 3, stride=stride, dilation=dilation * (m + 1), groups=groups)
            for m in range(num_paths)
        )
        attn_channels = attn_channels or make_divisible(out_channels * rd_ratio, rd_divisor)
        self.attn = SKAttention(out_channels, num_paths, attn_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            inputs = torch.split(x, self.in_channels // self.num_paths, dim=1)
            branches = [path(xi) for path, xi in zip(self.paths, inputs, strict=True)]
        else:
            branches = [path(x) for path in self.paths]
        stacked = torch.stack(branches, dim=1)
        return (stacked * self.attn(stacked)).sum(1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al.): x * sigmoid(fc2(relu(fc1(mean_hw(x))))), 1x1 convs with bias."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))
