"""ResNet-18/34/50/101 (He et al. 2016), the trunk of the CNN+CAM classifier.

Our own definitions so the query path does not import torchvision: `import torchvision` pulls in
`torchvision.ops`, and with it torch._dynamo and sympy (about 1.8 s of a cold query), for four
network definitions. The module and parameter names, the construction order and the initial
weights are torchvision's (`torchvision.models.resnet*`, weights=None), so every state dict written
with a torchvision trunk, and torchvision's ImageNet weight files, load unchanged, and a seeded model
starts from the same weights (tests/test_resnet.py checks names, shapes, initial weights and outputs).
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34). No dilation, as in torchvision."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        if dilation > 1:
            raise NotImplementedError("BasicBlock has no dilation")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided or dilated), 1x1 expand, and a shortcut (ResNet-50/101); the
    stride sits on the 3x3 convolution (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """The stem (7x7 conv, BN, ReLU, max-pool), layer1-4, global average pool and an ImageNet fc.

    `replace_stride_with_dilation` (for layer2-4) trades a stage's stride for dilation, which keeps
    the receptive field while keeping the maps larger (Bottleneck blocks only). The fc is built even
    though the classifier drops it: it draws from the random generator, so without it a seeded
    model would start from other head weights than it did with torchvision's trunk.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int],
                 num_classes: int = 1000, replace_stride_with_dilation: list[bool] | None = None):
        super().__init__()
        dilate = list(replace_stride_with_dilation or [False, False, False])
        if len(dilate) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 entries, got {dilate}")
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # He initialisation for convolutions, BN as identity: torchvision's, in module order.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        # The first block keeps the previous dilation (it does the stage's down-sampling step).
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Blocks per stage, from the paper's Table 1.
DEPTHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
          "resnet50": (Bottleneck, [3, 4, 6, 3]), "resnet101": (Bottleneck, [3, 4, 23, 3])}


def resnet(arch: str, replace_stride_with_dilation: list[bool] | None = None) -> ResNet:
    """An untrained ResNet by name ("resnet18", "resnet34", "resnet50", "resnet101")."""
    if arch not in DEPTHS:
        raise ValueError(f"unknown ResNet {arch!r}; valid: {', '.join(DEPTHS)}")
    block, layers = DEPTHS[arch]
    return ResNet(block, layers, replace_stride_with_dilation=replace_stride_with_dilation)
