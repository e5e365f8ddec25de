"""The models of the paper and of the MNIST-1D profile, behind one :func:`build`. CIFAR ResNets (He et al. 2016)
and VGGs are OpenLTH's, and the paper's models are initialized as OpenLTH does (:func:`openlth_init`)."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .config import ModelConfig, import_path, is_import_path

__all__ = ["MLP", "CNN1D", "CifarResNet", "CifarVGG", "openlth_init", "build", "LeNet300100", "count_parameters"]


class MLP(nn.Module):
    """Fully connected ReLU network: ``in -> width x depth -> classes``."""

    def __init__(self, in_features: int, num_classes: int, width: int = 512, depth: int = 2):
        super().__init__()
        dims = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class CNN1D(nn.Module):
    """Small 1D CNN for MNIST-1D: a kernel-5 conv, then kernel-3 convs, all stride 2, ReLU."""

    def __init__(self, length: int, num_classes: int, channels: int = 64, depth: int = 3):
        super().__init__()
        kernels = [5 if i == 0 else 3 for i in range(depth)]
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else channels, channels, k, stride=2, padding=k // 2)
                                   for i, k in enumerate(kernels))
        for k in kernels:  # each conv's output length
            length = (length + 2 * (k // 2) - k) // 2 + 1
        self.out = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 1, -1)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.out(x.flatten(1))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if downsample or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: three stages of n blocks, widths w, 2w, 4w."""

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(_Block(c_in, c_out, downsample=stage > 0 and i == 0))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


_VGG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
        16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]}


class CifarVGG(nn.Module):
    """VGG for 32x32 inputs (OpenLTH's ``cifar_vgg``): conv-BN-ReLU stack, 2x2 pool, linear head."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        layers, c_in = [], in_channels
        for v in _VGG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                v = v * width // 64  # width: channels of the first stage (64 in the paper)
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


@torch.no_grad()
def openlth_init(model: nn.Module) -> nn.Module:
    """OpenLTH's initialization: kaiming-normal conv/linear weights, BatchNorm weight U[0, 1), bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape))
            m.bias.zero_()
    return model


def build(cfg: ModelConfig | str, input_shape: tuple[int, ...], num_classes: int, **overrides) -> nn.Module:
    """Build a model (a :class:`ModelConfig` or a name) for ``input_shape`` (no batch dim); unset sizes: defaults.
    The paper's models (LeNet-300-100, the ResNets and VGGs) are initialized as OpenLTH does (:func:`openlth_init`);
    the MLP and the 1D CNN keep PyTorch's default initialization."""
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg, **overrides)
    name, w, d = cfg.name, cfg.width, cfg.depth
    if is_import_path(name):  # a researcher's own model (pgcore.config.import_path)
        sizes = {k: v for k, v in (("width", w), ("depth", d)) if v is not None}
        return import_path(name)(input_shape, num_classes, **sizes)
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes, width=w or 512, depth=d or 2)
    if name == "cnn1d":
        if len(input_shape) != 1:
            raise ValueError(f"cnn1d needs 1D inputs, got shape {input_shape}")
        return CNN1D(input_shape[0], num_classes, channels=w or 64, depth=d or 3)
    if name == "lenet_300_100":
        return openlth_init(LeNet300100(math.prod(input_shape), num_classes))
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image inputs (C, H, W), got shape {input_shape}")
    if name.startswith("resnet"):
        return openlth_init(CifarResNet(int(name[6:]), num_classes, width=w or 16, in_channels=input_shape[0]))
    if name.startswith("vgg"):
        return openlth_init(CifarVGG(int(name[3:]), num_classes, in_channels=input_shape[0], width=w or 64))
    raise ValueError(f"unknown model '{name}'")


class LeNet300100(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998), as in the lottery ticket experiments on MNIST."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
