"""A textbook baseline, written independently of the engine: the PyTorch tutorial "Neural Transfer Using PyTorch".

VGG19 (or VGG16) features in eager fp32 (same weights as the engine, torchvision layout), loss modules after the
chosen layers, the network cut after the last loss, ``torch.optim.LBFGS`` with its defaults (lr 1, max_iter 20,
history 100), the input clamped to [0, 1] in the closure, style weight 1e6 per layer. The tutorial puts its losses
after conv_1..conv_5; the benchmark uses the engine's layers (through relu5_1) so both do the same work.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()
        self.loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor) -> None:
        super().__init__()
        self.target = gram_matrix(target_feature).detach()
        self.loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(gram_matrix(x), self.target)
        return x


class Normalization(nn.Module):
    """torchvision: ImageNet mean and std on RGB in [0, 1]; caffe: BGR, 0-255, minus the mean pixel."""

    def __init__(self, convention: str = "torchvision") -> None:
        super().__init__()
        self.caffe = convention == "caffe"
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        self.bgr_mean = torch.tensor([103.939, 116.779, 123.68]).view(-1, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.caffe:
            return img[:, [2, 1, 0]] * 255.0 - self.bgr_mean.to(img)
        return (img - self.mean.to(img)) / self.std.to(img)


def vgg_features(state: Mapping[str, torch.Tensor], network: str = "vgg19") -> nn.Sequential:
    """torchvision's vgg19().features (or vgg16()'s) built from its configuration list, loaded from ``state``."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _CFGS[network]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    features = nn.Sequential(*layers)
    features.load_state_dict({k[len("features.") :]: v for k, v in state.items()}, strict=False)
    return features.eval()


def same_size(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The tutorial needs style and content of one size (its loss modules see both): resize the style."""
    size = (int(content.shape[-2]), int(content.shape[-1]))
    return F.interpolate(style, size=size, mode="bilinear", align_corners=False, antialias=True)


def build(
    state: Mapping[str, torch.Tensor],
    style: torch.Tensor,
    content: torch.Tensor,
    device: torch.device,
    content_layers: tuple[str, ...] = CONTENT_LAYERS,
    style_layers: tuple[str, ...] = STYLE_LAYERS,
    network: str = "vgg19",
    convention: str = "torchvision",
) -> tuple[nn.Sequential, list[StyleLoss], list[ContentLoss]]:
    style = same_size(style, content)
    cnn = vgg_features(state, network).to(device)
    model = nn.Sequential(Normalization(convention).to(device))
    content_losses, style_losses = [], []
    block, conv = 1, 0
    for i, layer in enumerate(cnn.children(), start=1):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            name = f"conv{block}_{conv}"
        elif isinstance(layer, nn.ReLU):
            name, layer = f"relu{block}_{conv}", nn.ReLU(inplace=False)
        else:
            name = f"pool{block}"
            block, conv = block + 1, 0
        model.add_module(name, layer)
        if name in content_layers:
            loss = ContentLoss(model(content).detach())
            model.add_module(f"content_loss_{i}", loss)
            content_losses.append(loss)
        if name in style_layers:
            style_loss = StyleLoss(model(style).detach())
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    last = max(j for j, m in enumerate(model) if isinstance(m, (ContentLoss, StyleLoss)))
    trimmed = nn.Sequential(*list(model.children())[: last + 1])
    trimmed.requires_grad_(False)
    return trimmed, style_losses, content_losses


class Baseline:
    """The tutorial's optimisation, one ``step()`` = one LBFGS.step call (up to 20 closure evaluations)."""

    def __init__(
        self,
        state: Mapping[str, torch.Tensor],
        content: torch.Tensor,
        style: torch.Tensor,
        device: torch.device,
        style_weight: float = 1e6,
        content_weight: float = 1.0,
        network: str = "vgg19",
        convention: str = "torchvision",
    ) -> None:
        self.model, self.style_losses, self.content_losses = build(
            state, style.to(device), content.to(device), device, network=network, convention=convention
        )
        self.image = content.to(device).clone().requires_grad_(True)
        self.optimizer = torch.optim.LBFGS([self.image])
        self.style_weight, self.content_weight = style_weight, content_weight
        self.evaluations = 0

    def closure(self) -> torch.Tensor:
        with torch.no_grad():
            self.image.clamp_(0, 1)
        self.optimizer.zero_grad()
        self.model(self.image)
        style_score = sum(sl.loss for sl in self.style_losses) * self.style_weight
        content_score = sum(cl.loss for cl in self.content_losses) * self.content_weight
        loss = style_score + content_score
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        self.evaluations += 1
        return loss

    def run(self, evaluations: int) -> torch.Tensor:
        """Optimise until ``evaluations`` closure calls (the tutorial's num_steps), then clamp."""
        while self.evaluations < evaluations:
            self.optimizer.step(self.closure)
        with torch.no_grad():
            self.image.clamp_(0, 1)
        return self.image.detach()
