"""The model registry: each network with its default input size, preprocessing and pretrained source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from sk_deploy.errors import SkDeployError
from sk_deploy.images import Preprocess
from sk_deploy.models.blocks import SEBottleneck, SKBasicBlock, SKBottleneck
from sk_deploy.models.resnet import ResNet


@dataclass(frozen=True)
class ModelSpec:
    """What a registered network is and how to feed it."""

    name: str
    description: str
    build: Callable[..., nn.Module]
    input_size: tuple[int, int, int] = (3, 224, 224)
    preprocess: Preprocess = field(default_factory=Preprocess)
    hub_id: str | None = None
    """Hugging Face hub repository of the timm checkpoint these weights load from, if there is one."""
    kwargs: dict[str, Any] = field(default_factory=dict)


class UnknownModelError(SkDeployError, KeyError):
    """A model name that is not registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a network to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Names of every registered network, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered network; an unknown name raises UnknownModelError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None


def create_model(name: str, num_classes: int = 1000, **overrides: Any) -> nn.Module:
    """Build a registered network with random weights, in eval mode."""
    spec = get_spec(name)
    model = spec.build(num_classes=num_classes, **{**spec.kwargs, **overrides})
    return model.eval()


def _paper_sk(num_paths: int = 2) -> dict[str, Any]:
    # SKNet paper / timm skresnext50_32x4d: r = 16, L = 32, no input split.
    return {"sk_kwargs": {"num_paths": num_paths, "rd_ratio": 1 / 16, "rd_divisor": 32, "split_input": False}}


# timm's SK-ResNet-18/34: the SK conv is the first 3x3 of a basic block, its input split across branches.
_TIMM_SK_BASIC = {"sk_kwargs": {"rd_ratio": 1 / 8, "rd_divisor": 16, "split_input": True}}

for _name, _layers, _hub in (
    ("sknet26", [2, 2, 2, 2], None),
    ("sknet50", [3, 4, 6, 3], "timm/skresnext50_32x4d.ra_in1k"),
    ("sknet101", [3, 4, 23, 3], None),
):
    register(ModelSpec(
        name=_name,
        description=f"SKNet-{_name[5:]} (paper layout, ResNeXt 32x4d base, SK[M=2, G=32, r=16], L=32)",
        build=ResNet,
        hub_id=_hub,
        kwargs={"block": SKBottleneck, "layers": _layers, "cardinality": 32, "base_width": 4,
                "block_args": _paper_sk()},
    ))

for _name, _layers in (("skresnet18", [2, 2, 2, 2]), ("skresnet34", [3, 4, 6, 3])):
    register(ModelSpec(
        name=_name,
        description=f"SK-ResNet-{_name[8:]} (timm layout: SK basic blocks, input split, rd 1/8)",
        build=ResNet,
        hub_id=f"timm/{_name}.ra_in1k",
        kwargs={"block": SKBasicBlock, "layers": _layers, "block_args": _TIMM_SK_BASIC},
    ))

register(ModelSpec(
    name="seresnet50",
    description="SE-ResNet-50 (SE r=16 after the last 1x1 of each bottleneck)",
    build=ResNet,
    hub_id="timm/seresnet50.ra2_in1k",
    kwargs={"block": SEBottleneck, "layers": [3, 4, 6, 3]},
))
register(ModelSpec(
    name="seresnext50_32x4d",
    description="SE-ResNeXt-50 32x4d ('SENet-50' in the SKNet paper)",
    build=ResNet,
    hub_id="timm/seresnext50_32x4d.racm_in1k",
    kwargs={"block": SEBottleneck, "layers": [3, 4, 6, 3], "cardinality": 32, "base_width": 4},
))
