"""Against timm itself, where it is installed (not on the CPU CI machines, where its torchvision cannot be
installed; it is on the GPU machines): timm's state dict loads strictly and the outputs are the same."""

from __future__ import annotations

import pytest
import torch

from sk_deploy.models import create_model
from sk_deploy.models.weights import fit_state_dict

from .test_models import randomise_bn

timm = pytest.importorskip("timm")

# ours -> timm's model name
TIMM_NAMES = {
    "sknet50": "skresnext50_32x4d",
    "skresnet18": "skresnet18",
    "skresnet34": "skresnet34",
    "seresnet50": "seresnet50",
    "seresnext50_32x4d": "seresnext50_32x4d",
}


@pytest.mark.parametrize(("ours", "theirs"), TIMM_NAMES.items())
def test_timm_state_dict_loads_strictly_and_outputs_match(ours: str, theirs: str) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(theirs, pretrained=False).eval()
    randomise_bn(reference)  # timm zero-inits some last BNs; give every block a say in the output
    model = create_model(ours)
    assert set(model.state_dict()) == set(reference.state_dict())
    fit_state_dict(model, reference.state_dict(), source=f"timm {theirs}")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
