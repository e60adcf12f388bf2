"""Loading weights: local checkpoints (safetensors, or torch files read with weights_only=True) and timm's
checkpoints from the Hugging Face hub. Nothing here unpickles arbitrary objects."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sk_deploy.errors import SkDeployError
from sk_deploy.models.registry import get_spec

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Containers that training scripts wrap a state dict in, most specific first.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_SHOWN = 8  # keys listed per kind of mismatch


class WeightsError(SkDeployError, RuntimeError):
    """A checkpoint that cannot be read, fetched or fitted; the message is meant for a person."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict.

    ``.safetensors`` is read with safetensors; ``.pth/.pt/.bin/.ckpt`` with ``torch.load(weights_only=True)``.
    Wrappers (``state_dict``, ``model``, ...) and ``module.`` / ``_orig_mod.`` prefixes are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        elif suffix in TORCH_SUFFIXES:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"{path}: unknown checkpoint type {suffix!r}; expected .safetensors or one of "
                f"{', '.join(TORCH_SUFFIXES)}"
            )
    except WeightsError:
        raise
    except Exception as exc:  # safetensors, pickle and zip errors have no common base
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot read checkpoint ({first_line})") from None
    return _unwrap(raw, path)


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in _WRAPPER_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            raise WeightsError(f"{path}: no state dict found (top-level keys: {', '.join(map(str, raw))})")
        raw = inner
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(raw).__name__}")
    tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` strictly, or raise WeightsError naming every mismatch.

    BatchNorm's ``num_batches_tracked`` counters, which some exports drop, are the only keys allowed to be
    absent: they play no part in inference.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                shown = ", ".join(keys[:_SHOWN]) + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise WeightsError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    full = dict(state_dict)
    for k, v in expected.items():
        full.setdefault(k, v)
    model.load_state_dict(full, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Read a local checkpoint and load it into ``model`` (strict; mismatches are named)."""
    fit_state_dict(model, read_state_dict(path), source=str(path))
    return model


#: seconds the hub's metadata request may take to connect and answer
HUB_TIMEOUT_S = 5.0


def _reach_hub() -> None:
    """Fail within HUB_TIMEOUT_S when the hub's host cannot be resolved or reached (huggingface_hub retries a
    failed lookup for some 25 s); skipped behind a proxy, which the direct connection would not go through."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443),
                                 timeout=HUB_TIMEOUT_S).close()
    except OSError as exc:
        raise OSError(f"{endpoint.hostname}: {exc.strerror or exc}") from None


def download_pretrained(model_name: str, cache_dir: str | Path | None = None) -> Path:
    """The local path of the timm checkpoint for a registered model, fetched from the hub when not cached.

    Uses ``huggingface_hub`` (its cache, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` apply).
    Without network and cache the failure is one line that says what to do instead.
    """
    spec = get_spec(model_name)
    if spec.hub_id is None:
        raise WeightsError(
            f"{model_name} has no pretrained checkpoint on the hub; pass --weights PATH to a checkpoint of your own"
        )
    import logging

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its per-retry warnings would bury the one line that matters
    try:
        try:  # the cache first: no network needed, and nothing to wait for
            return Path(hf_hub_download(spec.hub_id, "model.safetensors", cache_dir=cache_dir, local_files_only=True))
        except LocalEntryNotFoundError:  # not cached: the hub it is
            _reach_hub()
        # a short metadata timeout: without network, fail in seconds rather than after the default's retries
        return Path(hf_hub_download(spec.hub_id, "model.safetensors", cache_dir=cache_dir, etag_timeout=HUB_TIMEOUT_S))
    except Exception as exc:  # offline, DNS, HTTP and cache errors: all end the same way for the user
        import textwrap

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = textwrap.shorten(reason, 200, placeholder=" ...")  # whole words, never cut mid-word
        raise WeightsError(
            f"cannot get {spec.hub_id} from the Hugging Face hub ({type(exc).__name__}: {reason}); "
            f"without network, download model.safetensors from huggingface.co/{spec.hub_id} elsewhere "
            "and pass --weights PATH"
        ) from None
    finally:
        hub_logger.setLevel(level)


def load_pretrained(model: nn.Module, model_name: str, cache_dir: str | Path | None = None) -> nn.Module:
    """Load the timm checkpoint of ``model_name`` from the hub (or its local cache) into ``model``."""
    path = download_pretrained(model_name, cache_dir)
    fit_state_dict(model, read_state_dict(path), source=f"{get_spec(model_name).hub_id} ({path})")
    return model


def build_model(
    model_name: str, weights: str | Path | None = None, pretrained: bool = False
) -> nn.Module:
    """A registered network in eval mode: random weights, a local checkpoint, or the timm checkpoint."""
    from sk_deploy.models.registry import create_model

    if weights is not None and pretrained:
        raise WeightsError("give either a weights file or pretrained, not both")
    model = create_model(model_name)
    if weights is not None:
        load_weights(model, weights)
    elif pretrained:
        load_pretrained(model, model_name)
    return model
