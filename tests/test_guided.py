"""Guided backpropagation, deconvnet and Guided Grad-CAM against closed forms."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_in_ulps, make_gapnet
from test_engine import assert_untouched, snapshot
from torch import nn

from gradcam_lite import deconvnet, grad_cam, guided_backprop, guided_grad_cam

D, H = 6, 9


def one_hidden_layer(activation: nn.Module, seed: int = 0):
    """y = w . act(V x) on x of shape (B, D, 1, 1)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, H, bias=False), activation, nn.Linear(H, 1, bias=False)).double().eval()
    return model, model[1].weight.detach(), model[3].weight.detach()[0]


def test_guided_closed_form_one_relu_layer():
    """On y = w . relu(V x): guided gradient = V^T (1[Vx > 0] * relu(w)); deconvnet = V^T relu(w)."""
    model, V, w = one_hidden_layer(nn.ReLU())
    x = torch.randn(4, D, 1, 1, dtype=torch.float64)
    active = (x.flatten(1) @ V.T > 0).double()
    assert 0 < active.mean() < 1 and (w > 0).any() and (w < 0).any()
    assert_close_in_ulps(guided_backprop(model, x, 0).flatten(1), (active * w.clamp(min=0)) @ V, ulps=H)  # sums of H terms
    assert_close_in_ulps(deconvnet(model, x, 0).flatten(1), (w.clamp(min=0) @ V).expand(4, D), ulps=H)


def test_guided_closed_form_relu6_active_range():
    """ReLU6 passes the gradient only where 0 < Vx < 6."""
    model, V, w = one_hidden_layer(nn.ReLU6())
    with torch.no_grad():
        model[1].weight *= 8  # push some units into saturation
    V = model[1].weight.detach()
    x = torch.randn(4, D, 1, 1, dtype=torch.float64)
    z = x.flatten(1) @ V.T
    active = ((z > 0) & (z < 6)).double()
    assert (z > 6).any() and (z < 0).any() and active.any()
    assert_close_in_ulps(guided_backprop(model, x, 0).flatten(1), (active * w.clamp(min=0)) @ V, ulps=H)


def test_guided_closed_form_two_relu_layers():
    """y = w . relu(U relu(V x)): the rule clips the signal at each ReLU before masking it."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, H, bias=False), nn.ReLU(), nn.Linear(H, 7, bias=False), nn.ReLU(), nn.Linear(7, 1, bias=False)).double().eval()
    V, U, w = model[1].weight.detach(), model[3].weight.detach(), model[5].weight.detach()[0]
    x = torch.randn(3, D, 1, 1, dtype=torch.float64)
    z1 = x.flatten(1) @ V.T
    z2 = z1.clamp(min=0) @ U.T
    r2 = (w.clamp(min=0) * (z2 > 0))
    r1 = ((r2 @ U).clamp(min=0) * (z1 > 0))
    assert_close_in_ulps(guided_backprop(model, x, 0).flatten(1), r1 @ V, ulps=2 * (7 + H))  # two layers of sums
    plain_r1 = ((w * (z2 > 0)) @ U) * (z1 > 0)
    assert not torch.allclose(r1 @ V, plain_r1 @ V)


def conv_relu_net(inplace: bool) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(inplace),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).double().eval()


def test_in_place_activations_give_the_same_result_and_keep_their_flag():
    inplace = conv_relu_net(inplace=True)  # seeds torch: x below is seeded too
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    modules_before = list(inplace.modules())
    for fn in (guided_backprop, deconvnet):  # in place or not, the same arithmetic in the same order: bit for bit
        torch.testing.assert_close(fn(inplace, x, 1), fn(conv_relu_net(inplace=False), x, 1), rtol=0, atol=0)
    assert inplace[1].inplace and inplace[3].inplace and list(inplace.modules()) == modules_before


def test_whole_batch_equals_each_image_and_repeat_calls_agree():
    """Batch vs one image: two summation orders in each 3 x 3 x 8 convolution (72 terms), twice.
    A repeat of the same call is the same sequence of operations: bit for bit equal."""
    model = conv_relu_net(inplace=True)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    batch = guided_backprop(model, x, [0, 2, 3])
    for b, t in enumerate([0, 2, 3]):
        assert_close_in_ulps(batch[b], guided_backprop(model, x[b : b + 1], t)[0], ulps=2 * 72)
    torch.testing.assert_close(guided_backprop(model, x, [0, 2, 3]), batch, rtol=0, atol=0)


@pytest.mark.parametrize("fn", [guided_backprop, deconvnet, lambda m, x, t: guided_grad_cam(m, x, t, "2")])
@pytest.mark.parametrize("target", [1, lambda out: out[:, 0] - out[:, 2], "raising"])
def test_calls_leave_model_input_and_hooks_as_they_were(fn, target):
    model = conv_relu_net(inplace=True)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    before = snapshot(model, x)
    if target == "raising":
        with pytest.raises(ZeroDivisionError):
            fn(model, x, lambda out: 1 / 0)
    else:
        assert fn(model, x, target).abs().max() > 0
    assert_untouched(model, x, before)


def test_guided_grad_cam_is_the_product():
    """The product of the two calls is the same sequence of operations (bit for bit); a (B, K) table
    sums each backward in another order than single-target calls do (on Intel's kernels, say):
    two 3 x 3 x 8 convolutions (72 terms each) and the map's 6 channels and 49 positions."""
    model = make_gapnet(inplace=True)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    expected = guided_backprop(model, x, [1, 3]) * grad_cam(model, x, [1, 3], "features.3")[:, None]
    torch.testing.assert_close(guided_grad_cam(model, x, [1, 3], "features.3"), expected, rtol=0, atol=0)
    table = guided_grad_cam(model, x, [[1, 3], [0, 2]], "features.3")
    assert table.shape == (2, 2, 3, 7, 7)
    assert_close_in_ulps(table[:, 1], guided_grad_cam(model, x, [3, 2], "features.3"), ulps=2 * 72 + 6 + 49)


class FunctionalReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(self.relu(x).mean(dim=(2, 3)))


def test_functional_relu_calls_are_detected_and_warned():
    model, x = FunctionalReLUNet().eval(), torch.randn(1, 3, 5, 5)
    with pytest.warns(UserWarning, match="1 functional ReLU call"):
        guided_backprop(model, x, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guided_backprop(conv_relu_net(inplace=False), torch.randn(1, 3, 5, 5, dtype=torch.float64), 0)


def test_efficientnet_guided_backprop_differs_from_plain_gradient(lite0, photos):
    from gradcam_lite.guided import input_gradients

    guided = guided_backprop(lite0, photos[:1], 285)
    plain = input_gradients(lite0, photos[:1], 285, rule=None)
    assert guided.shape == (1, 3, 224, 224) and not torch.allclose(guided, plain)
    assert all(p.grad is None for p in lite0.parameters())
