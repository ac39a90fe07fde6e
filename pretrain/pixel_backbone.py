"""Pixel-BERT's visual side: a trainable CNN whose last feature map's cells are visual tokens.

`PixelBackbone` is part of the model (`ImageBertModel.visual`), so the optimizer trains it end
to end and `save_pretrained`/`from_pretrained` carry it. Its spec lives in the model config
(`ImageBertConfig.visual_backbone`):

    {"type": "resnet", "width": 32, "depths": [1, 1, 1, 1]}     a small ResNet written here
    {"type": "resnet18" | "resnet50", "weights": "/path/resnet18.pth"}   torchvision's ResNet

A torchvision ResNet's ImageNet weights come only from a local file the user gives (`weights`,
loaded by `load_backbone_weights` when a model is first built); nothing is downloaded.

During training Pixel-BERT keeps a random `sample` of the cells per image (random pixel
sampling: cheaper, and a regulariser); at evaluation every cell is a token.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from pretrain.regions.base import grid_boxes

TORCHVISION_RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


class BackboneError(ValueError):
    """A visual backbone spec cannot be built; the message says which key to fix."""


def backbone_out_dim(spec: dict[str, Any]) -> int:
    """Channels of the backbone's last feature map (the visual tokens' feature size)."""
    kind = spec.get("type", "resnet")
    if kind == "resnet":
        depths = list(spec.get("depths", [1, 1, 1, 1]))
        return int(spec.get("width", 32)) * 2 ** (len(depths) - 1)
    if kind in TORCHVISION_RESNETS:
        return TORCHVISION_RESNETS[kind]
    raise BackboneError(
        f"unknown visual backbone {kind!r}; use 'resnet' (small, written here) or one of "
        f"{sorted(TORCHVISION_RESNETS)}"
    )


def backbone_stride(spec: dict[str, Any]) -> int:
    """Pixels per feature-map cell along a side."""
    if spec.get("type", "resnet") == "resnet":
        return 2 ** len(list(spec.get("depths", [1, 1, 1, 1])))
    return 32


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual (projected when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet of `len(depths)` stages (`depths[i]` blocks each), `width` channels doubling per
    stage; a stride-2 stem and stride 2 at every later stage: stride 2**len(depths)."""

    def __init__(self, width: int = 32, depths: list[int] | tuple[int, ...] = (1, 1, 1, 1)) -> None:
        super().__init__()
        if not depths or min(depths) < 1 or width < 1:
            raise BackboneError(f"resnet needs width >= 1 and depths >= 1, got {width}, {depths}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        channels = width
        for i, depth in enumerate(depths):
            out = width * 2**i
            blocks = [BasicBlock(channels, out, 1 if i == 0 else 2)]
            blocks += [BasicBlock(out, out, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(pixels))  # B x C x h x w


def _torchvision_trunk(kind: str) -> nn.Module:
    try:
        import torchvision
    except ImportError as error:
        raise BackboneError(
            f"visual backbone {kind!r} needs torchvision; install it or use type 'resnet'"
        ) from error
    net = getattr(torchvision.models, kind)(weights=None)
    # Everything up to the last stage: the classifier's pooling and fc are not used.
    return nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )


class PixelBackbone(nn.Module):
    """CNN over pixels → (features B x R x C, grid boxes B x R x 5, mask B x R).

    In training mode each image keeps a random `sample` of its R cells (all when R <= sample).
    """

    def __init__(self, spec: dict[str, Any], sample: int = 100) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.sample = sample
        kind = spec.get("type", "resnet")
        self.out_dim = backbone_out_dim(spec)
        if kind == "resnet":
            self.trunk: nn.Module = SmallResNet(
                int(spec.get("width", 32)), list(spec.get("depths", [1, 1, 1, 1]))
            )
        else:
            self.trunk = _torchvision_trunk(kind)

    def forward(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.trunk(pixels)
        n, c, h, w = fmap.shape
        features = fmap.flatten(2).transpose(1, 2)  # B x (h*w) x C, row-major like grid_boxes
        boxes = grid_boxes(h, w).to(features.device, features.dtype).expand(n, -1, -1)
        cells = h * w
        if self.training and 0 < self.sample < cells:
            # Random pixel sampling: the draw is on the CPU (the trainer checkpoints its RNG).
            keep = torch.rand((n, cells), generator=generator).argsort(dim=1)[:, : self.sample]
            keep = keep.sort(dim=1).values.to(features.device)
            features = features.gather(1, keep[..., None].expand(-1, -1, c))
            boxes = boxes.gather(1, keep[..., None].expand(-1, -1, 5))
        mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        return features, boxes, mask


def load_backbone_weights(backbone: PixelBackbone, path: str | os.PathLike[str]) -> list[str]:
    """Load ImageNet (or any) weights from a local file into the trunk; return the loaded names.

    Accepts a torchvision ResNet state dict (`conv1.weight`, `layer1.0...`; its `fc` is ignored)
    or one saved from `backbone.trunk` itself.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"backbone weights {path} do not exist; give a local .pth/.safetensors file "
            "(LAIT never downloads them)"
        )
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    own = backbone.trunk.state_dict()
    if not set(own) & set(state):
        # torchvision names → our Sequential's indices (conv1, bn1, relu, maxpool, layer1..4).
        order = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}
        order["layer4"] = "7"
        renamed = {}
        for name, value in state.items():
            head, _, rest = name.partition(".")
            if head in order:
                renamed[f"{order[head]}.{rest}"] = value
        state = renamed
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(matched))
    if missing:
        raise BackboneError(
            f"{path} does not fit the {backbone.spec.get('type')} backbone: {len(missing)} "
            f"tensors missing or of another shape (first: {missing[:3]})"
        )
    backbone.trunk.load_state_dict(matched)
    return sorted(matched)
