"""GPU code paths that also run on a CPU: autocast precision, channels_last, device and precision checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.device import configure_precision, resolve_device
from nst_engine.errors import ProviderError
from nst_engine.jobs import Job
from nst_engine.objective import Objective
from nst_engine.targets import StyleRegion, content_target, style_target
from tests.conftest import gradient_image


def _objective(model_info, **settings):  # type: ignore[no-untyped-def]
    config = StyleConfig(**{"size": 64, **settings})
    net = model_info.torch_module(config.layers)
    content, style = gradient_image(48, 64, 1), gradient_image(64, 64, 2)
    with torch.no_grad():
        c_t = content_target(net, content, config.content_layers)
        s_t = style_target(net, style, config.style_layers)
    return Objective.of(net, c_t, [StyleRegion(s_t)], config).accelerate(torch.device("cpu"))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_gram_product_takes_bf16_features_as_they_are_and_hands_back_a_bf16_gradient(
    layout: torch.memory_format,
) -> None:
    from nst_engine.losses.functional import moment_sums

    torch.manual_seed(0)
    low = torch.randn(1, 16, 12, 10).to(torch.bfloat16).contiguous(memory_format=layout).requires_grad_(True)
    wide = low.detach().float().contiguous(memory_format=layout).requires_grad_(True)
    moment, first, count = moment_sums(low, first=False)
    reference, _, _ = moment_sums(wide, first=False)
    assert first is None and moment.dtype == torch.float32 and float(count) == 120
    torch.testing.assert_close(moment, reference)  # the float32 product of the features' exact widening
    weights = torch.randn(16, 16)
    (grad,) = torch.autograd.grad((moment * weights).sum(), low)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), wide)
    assert grad.dtype == torch.bfloat16 and grad.is_contiguous(memory_format=layout)
    assert float((grad.float() - grad_ref).norm() / grad_ref.norm()) < 1e-2  # the residual rounded to bf16 only


def test_bf16_autocast_keeps_losses_in_fp32_and_close(model_info) -> None:  # type: ignore[no-untyped-def]
    image = gradient_image(48, 64, 3).requires_grad_(True)
    fp32 = _objective(model_info)(image)
    bf16_terms = _objective(model_info, precision="bf16")(image)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in bf16_terms.values())
    reference = float(fp32["total"].detach())
    rel = abs(float(bf16_terms["total"].detach()) - reference) / reference
    assert rel < 0.05, rel  # bf16 has 8 bits of mantissa; the Gram and loss sums stay fp32
    (grad,) = torch.autograd.grad(bf16_terms["total"], image)
    assert torch.isfinite(grad).all() and grad.dtype == torch.float32


def test_channels_last_gives_the_same_loss(model_info) -> None:  # type: ignore[no-untyped-def]
    image = gradient_image(48, 64, 4)
    with torch.no_grad():
        plain = float(_objective(model_info, channels_last=False)(image)["total"])
        nhwc = float(_objective(model_info, channels_last=True)(image)["total"])
    assert abs(plain - nhwc) <= 1e-4 * abs(plain)


def test_channels_last_objective_sends_channels_last_gradients_into_the_network(model_info) -> None:  # type: ignore[no-untyped-def]
    objective = _objective(model_info, channels_last=True)
    seen: dict[str, bool] = {}
    forward = objective.forward_net

    def hooked(image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = forward(image)
        for name, f in features.items():
            f.register_hook(
                lambda g, name=name: seen.__setitem__(name, g.is_contiguous(memory_format=torch.channels_last))
            )
        return features

    object.__setattr__(objective, "forward_net", hooked)
    objective(gradient_image(48, 64, 5).requires_grad_(True))["total"].backward()
    assert seen == dict.fromkeys(objective.config.layers, True)


def test_device_and_precision_choices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ProviderError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ProviderError, match="needs a CUDA device"):
            configure_precision(torch.device("cpu"), "fp16")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
        configure_precision(torch.device("cpu"), "bf16")  # allowed on CPU (autocast in the objective)
        # A CPU run leaves CUDA's global switches alone; on CUDA, fp32 turns TF32 off and autotuning on.
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark
        configure_precision(torch.device("cuda"), "fp32")  # sets flags only; needs no GPU
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
        configure_precision(torch.device("cuda"), "tf32")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = flags


# -- --precision auto ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "used", "said"),
    [(("avx512_bf16",), "bf16", "computes bf16 natively (avx512_bf16"), (("amx_bf16",), "bf16", "amx_bf16"),
     ((), "fp32", "no native bf16")],
)  # fmt: skip
def test_auto_is_bf16_only_where_the_cpu_computes_it_natively(
    flags: tuple[str, ...], used: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nst_engine.device as device

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: flags)
    chosen, why = device.choose_precision("auto", torch.device("cpu"))
    assert chosen == used and said in why and why.startswith("auto: ")
    assert device.choose_precision("fp32", torch.device("cpu")) == ("fp32", "asked for")


@pytest.mark.parametrize(("flags", "used"), [(("avx512_bf16",), "bf16"), ((), "fp32")])
def test_the_default_run_says_which_precision_it_chose_and_why(
    flags: tuple[str, ...], used: str, monkeypatch: pytest.MonkeyPatch, model_path: Path, shared_images: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    import nst_engine.device as device
    from nst_engine.api import Session
    from nst_engine.events import Note
    from nst_engine.spec import ModelSpec

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: flags)
    notes: list[str] = []
    config = StyleConfig(size=32, steps=2)
    assert config.precision == "auto"
    session = Session(config, [shared_images / "style_great_wave.jpg"], model=ModelSpec(model=model_path),
                      on_event=lambda e: notes.append(e.text) if isinstance(e, Note) else None)  # fmt: skip
    session.run([Job(shared_images / "content_turtle.jpg", tmp_path / "out.png")], trace=tmp_path / "t.json")
    said = next(n for n in notes if n.startswith("precision: "))
    assert said.startswith(f"precision: {used} (auto: ")
    trace = json.loads((tmp_path / "t.json").read_text())
    assert trace["precision"]["used"] == used and trace["settings"]["precision"] == "auto"
