"""HiResCAM: closed forms, the first-order Taylor term by forward-mode differentiation, and pytorch-grad-cam as an oracle."""

import numpy as np
import pytest
import torch
import torchvision
from conftest import activations_and_gradients, assert_close_in_ulps, make_gapnet
from pytorch_grad_cam import HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from gradcam_lite import cam, grad_cam, hires_cam

RAW = dict(size=None, normalize=False)


def test_on_a_gap_head_it_is_cam_over_z_and_sums_to_the_logit_minus_its_bias():
    """Below GAP + linear, G^k_ij = w^c_k / Z everywhere: sum_k G^k A^k = CAM / Z, and its sum over
    positions is sum_k w^c_k mean_ij A^k_ij = y^c - b^c. Grad-CAM's signed map is the same map."""
    model = make_gapnet()
    x = torch.randn(3, 3, 7, 9, dtype=torch.float64)
    A = model.features(x)
    Z = A.shape[2] * A.shape[3]
    target = [1, 4, 0]
    signed = hires_cam(model, x, target, "features", relu=False, **RAW)
    expected = cam(A, model.fc.weight, target) / Z
    assert expected.abs().max() > 1e-3
    assert_close_in_ulps(signed, expected, ulps=2 * (Z + A.shape[1]))
    with torch.no_grad():
        logit_minus_bias = model(x)[torch.arange(3), target] - model.fc.bias[target]
    assert_close_in_ulps(signed.sum(dim=(1, 2)), logit_minus_bias, ulps=4 * (Z + A.shape[1]))
    assert_close_in_ulps(grad_cam(model, x, target, "features", relu=False, **RAW), signed, ulps=4 * (Z + A.shape[1]))


class PositionReader(nn.Module):
    """conv-ReLU, then a ReLU layer and a linear head over the flattened grid: each position has its own weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.above = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 4))

    def forward(self, x):
        return self.above(self.features(x))


def test_signed_map_sums_to_the_first_order_taylor_term_by_forward_mode():
    """sum_ij S_ij = sum_kij G_kij A_kij = d/dt y^c(A + t A) at t = 0: computed here by forward-mode AD (torch.func.jvp),
    which shares nothing with the engine's hooks and backward pass. The gradient varies in space, so Grad-CAM's
    Z alpha_k sum_ij A_kij is a different number: the average loses it."""
    torch.manual_seed(0)
    model = PositionReader().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    A = model.features(x).detach()
    _, directional = torch.func.jvp(lambda a: model.above(a)[:, 2], (A,), (A,))
    signed = hires_cam(model, x, 2, "features", relu=False, **RAW)
    assert_close_in_ulps(signed.sum(dim=(1, 2)), directional.detach(), ulps=4 * 6 * 36)
    averaged = grad_cam(model, x, 2, "features", relu=False, **RAW).sum(dim=(1, 2)) * 36
    assert float((averaged - directional).abs().min()) > 0.05 * float(directional.detach().abs().max())


def test_k_targets_in_one_pass_equal_single_calls():
    torch.manual_seed(0)
    model = PositionReader().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    targets = [[0, 3], [2, 1]]
    table = hires_cam(model, x, targets, "features", relu=False, **RAW)
    assert table.shape == (2, 2, 6, 6)
    for k in range(2):
        column = [row[k] for row in targets]
        # a (B, K) table sums each backward in another order (the 3 x 3 x 6 convolution above: 54 terms), then C channels
        assert_close_in_ulps(table[:, k], hires_cam(model, x, column, "features", relu=False, **RAW), ulps=2 * (54 + 6))


def test_counterfactual_is_the_relu_of_the_negated_signed_map():
    torch.manual_seed(0)
    model = PositionReader().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    signed = hires_cam(model, x, 1, "features", relu=False, **RAW)
    assert (signed < 0).any() and (signed > 0).any()
    torch.testing.assert_close(hires_cam(model, x, 1, "features", counterfactual=True, **RAW), (-signed).clamp(min=0), rtol=0, atol=0)


def oracle_hires_cam(model, x, targets, layer_module):
    """pytorch-grad-cam's HiResCAM at the layer's resolution: its own activations and gradients, its get_cam_image, no rescaling."""
    method = HiResCAM(model, [layer_module])
    try:
        outputs = method.activations_and_grads(x)
        sum(ClassifierOutputTarget(c)(o) for c, o in zip(targets, outputs)).backward()
        activations = method.activations_and_grads.activations[0].numpy()
        gradients = method.activations_and_grads.gradients[0].numpy()
        return torch.from_numpy(method.get_cam_image(x, layer_module, None, activations, gradients, False)), activations.shape
    finally:
        method.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


ARCHITECTURES = {
    "resnet18 layer4": (lambda: torchvision.models.resnet18(weights=None), "layer4"),
    "resnet18 layer3.1.conv2": (lambda: torchvision.models.resnet18(weights=None), "layer3.1.conv2"),
    "mobilenet_v3_small features.9": (lambda: torchvision.models.mobilenet_v3_small(weights=None), "features.9"),
    "densenet121 features.denseblock3": (lambda: torchvision.models.densenet121(weights=None), "features.denseblock3"),
}


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_agrees_with_pytorch_grad_cam(architecture):
    make, layer = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    targets = [7, 123]
    expected, shape = oracle_hires_cam(model, x, targets, model.get_submodule(layer))
    got = hires_cam(model, x, targets, layer, relu=False, **RAW)
    assert float(expected.abs().max()) > 0
    # one product per channel and position, then the sum over C channels in numpy's order and in torch's
    assert_close_in_ulps(got, expected, ulps=2 * shape[1])
    assert_close_in_ulps(hires_cam(model, x, targets, layer, **RAW), torch.from_numpy(np.maximum(expected.numpy(), 0)), ulps=2 * shape[1])


def test_raw_map_equals_a_hand_made_one_on_efficientnet(lite0, photos):
    layer = "features.5.1"
    A, g = activations_and_gradients(lite0, photos, lite0.get_submodule(layer), lambda out: out[:, 285])
    expected = (g * A).sum(dim=1).clamp(min=0)
    assert_close_in_ulps(hires_cam(lite0, photos, 285, layer, **RAW), expected, ulps=2 * A.shape[1])
