"""SKNet and SENet in PyTorch, with timm's module names so timm checkpoints load directly."""

from sk_deploy.models.layers import ConvNormAct, SKAttention, SKConv, SqueezeExcite
from sk_deploy.models.registry import (
    ModelSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    register,
)

__all__ = [
    "ConvNormAct",
    "ModelSpec",
    "SKAttention",
    "SKConv",
    "SqueezeExcite",
    "UnknownModelError",
    "create_model",
    "get_spec",
    "list_models",
    "register",
]
