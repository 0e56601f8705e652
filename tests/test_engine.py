"""The engine's contract (COURSE.md): each test states a property derived independently of the code."""

import numpy as np
import pytest
import torch
import torchvision
from conftest import activations_and_gradients, assert_close_in_ulps, make_gapnet
from torch import nn

from gradcam_lite import cam, capture, grad_cam
from gradcam_lite.maps import normalize_maps, upsample

CAT, ESPRESSO, TABBY = 285, 967, 281
RAW = dict(size=None, normalize=False)


def hand_made_grad_cam(model, x, score_fn, layer_module):
    """Second implementation: full backward with a retained gradient, then eq. 1 and 2 of the paper."""
    A, g = activations_and_gradients(model, x, layer_module, score_fn)
    alpha = g.sum(dim=(2, 3)) / (g.shape[2] * g.shape[3])
    return (alpha[:, :, None, None] * A).sum(dim=1)


# --- the maths --------------------------------------------------------------------------------


def test_cam_equivalence_on_gap_fc_net():
    """With GAP then a linear layer, dy^c/dA^k_ij = w^c_k / Z, so Grad-CAM = CAM / Z (signed and after ReLU)."""
    model = make_gapnet()
    x = torch.randn(4, 3, 9, 11, dtype=torch.float64)
    A = model.features(x)
    Z = A.shape[2] * A.shape[3]
    target = [0, 3, 4, 1]
    expected = cam(A, model.fc.weight, target) / Z
    assert expected.abs().max() > 1e-3
    terms = 2 * (Z + A.shape[1])  # the engine sums Z gradients and C channels; CAM sums C channels, then divides
    assert_close_in_ulps(grad_cam(model, x, target, "features", relu=False, **RAW), expected, terms)
    assert_close_in_ulps(grad_cam(model, x, target, "features", **RAW), expected.clamp(min=0), terms)


def test_cam_equivalence_on_efficientnet(lite0, photos):
    A = lite0.features(photos)
    expected = cam(A, lite0.classifier[1].weight, CAT) / 49
    got = grad_cam(lite0, photos, CAT, "features.8", relu=False, **RAW)
    assert_close_in_ulps(got, expected, ulps=1280 + 49)


@pytest.mark.parametrize(("layer", "channels"), [("features.8", 1280), ("features.5.1", 112)])
def test_raw_map_equals_second_implementation(lite0, photos, layer, channels):
    """At the head (gradient constant in space) and inside a block (gradient varies in space)."""
    expected = hand_made_grad_cam(lite0, photos, lambda out: out[:, CAT], lite0.get_submodule(layer)).clamp(min=0)
    got = grad_cam(lite0, photos, CAT, layer, **RAW)
    assert_close_in_ulps(got, expected, ulps=channels + expected[0].numel())  # C channels, Z positions
    assert all(p.grad is None for p in lite0.parameters())


def test_in_place_ops_after_layer_closed_form():
    """torchvision's BasicBlock does `out = bn2(out); out += identity; out = relu(out)` in place.

    For the last block of ResNet-18, y^c = b^c + sum_k w^c_k mean_ij relu(A + I)^k_ij, so
    dy^c/dA^k_ij = w^c_k / Z * 1[(A + I)^k_ij > 0], with A the output of layer4.1.bn2 and I the block's input.
    """
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    seen = {}
    handles = [
        model.layer4[1].register_forward_pre_hook(lambda m, inp: seen.__setitem__("I", inp[0].clone())),
        model.layer4[1].bn2.register_forward_hook(lambda m, i, out: seen.__setitem__("A", out.clone())),
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    A, I = seen["A"], seen["I"]
    w = model.fc.weight[[3, 5]]
    Z = A.shape[2] * A.shape[3]
    grad = w[:, :, None, None] / Z * ((A + I) > 0)
    expected = (grad.mean(dim=(2, 3))[:, :, None, None] * A).sum(dim=1)
    got = grad_cam(model, x, [3, 5], "layer4.1.bn2", relu=False, **RAW)
    assert expected.abs().max() > 1e-4
    assert_close_in_ulps(got, expected, ulps=2 * (A.shape[1] + Z))


def test_in_place_relu_gives_same_map_as_out_of_place():
    """The same operations in the same order (a ReLU is exact), so the maps are bit for bit equal."""
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    for layer in ["features.0", "features.2", "features.3"]:
        plain = grad_cam(make_gapnet(inplace=False), x, 2, layer, **RAW)
        inplace = grad_cam(make_gapnet(inplace=True), x, 2, layer, **RAW)
        assert plain.max() > 0
        torch.testing.assert_close(inplace, plain, rtol=0, atol=0)


def test_map_inside_batch_equals_map_alone(lite0, photos):
    """A batch changes how each convolution's sums are blocked, not what they sum: the widest sum in
    the network has 1,152 terms (a projection convolution), so 2^10 ulps of the map's range."""
    targets = [CAT, ESPRESSO, ESPRESSO]
    batch = grad_cam(lite0, photos, targets, "features.8")
    for b, t in enumerate(targets):
        alone = grad_cam(lite0, photos[b : b + 1], t, "features.8")
        assert_close_in_ulps(batch[b], alone[0], ulps=2**10)


def test_k_maps_per_image_equal_k_single_calls(lite0, photos):
    table = [[CAT, ESPRESSO, TABBY], [ESPRESSO, CAT, 0], [CAT, ESPRESSO, 999]]
    together = grad_cam(lite0, photos, table, "features.5.1", relu=False, **RAW)
    assert together.shape == (3, 3, 14, 14)
    for k in range(3):
        column = [row[k] for row in table]
        single = grad_cam(lite0, photos, column, "features.5.1", relu=False, **RAW)
        assert_close_in_ulps(together[:, k], single, ulps=2 * (112 + 14 * 14))  # C channels and Z positions


def test_same_class_for_every_image_equals_per_image_list(lite0, photos):
    torch.testing.assert_close(grad_cam(lite0, photos, CAT, "features.8"), grad_cam(lite0, photos, [CAT] * 3, "features.8"))
    torch.testing.assert_close(grad_cam(lite0, photos, torch.tensor(CAT), "features.8"), grad_cam(lite0, photos, CAT, "features.8"))


def test_signed_map_is_linear_in_the_target():
    """alpha is linear in y (gradients are), and the weighted sum is linear in alpha."""
    model = make_gapnet()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    s1 = grad_cam(model, x, 1, "features.1", relu=False, **RAW)
    s4 = grad_cam(model, x, 4, "features.1", relu=False, **RAW)
    combined = grad_cam(model, x, lambda out: 2.5 * out[:, 1] - 0.75 * out[:, 4], "features.1", relu=False, **RAW)
    assert_close_in_ulps(combined, 2.5 * s1 - 0.75 * s4, ulps=2 * (8 + 49))  # 8 channels, 7 x 7 positions


def test_counterfactual_is_relu_of_negated_signed_map(lite0, photos):
    signed = grad_cam(lite0, photos, ESPRESSO, "features.8", relu=False, **RAW)
    assert (signed < 0).any() and (signed > 0).any()
    counter = grad_cam(lite0, photos, ESPRESSO, "features.8", counterfactual=True, **RAW)
    torch.testing.assert_close(counter, (-signed).clamp(min=0), rtol=0, atol=0)


def test_default_output_is_upsampled_and_normalised_raw_map(lite0, photos):
    raw = grad_cam(lite0, photos, CAT, "features.8", **RAW)
    maps = grad_cam(lite0, photos, CAT, "features.8")
    up = torch.nn.functional.interpolate(raw[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(maps, (up - low) / (high - low), rtol=0, atol=1e-6)
    assert maps.shape == (3, 224, 224)
    assert grad_cam(lite0, photos[:1], CAT, "features.8", size=(30, 50)).shape == (1, 30, 50)


def test_upsample_matches_separable_linear_interpolation():
    """align_corners=False: output pixel i samples the source at (i + 0.5) * n_in / n_out - 0.5, clamped."""
    src = torch.randn(5, 7, dtype=torch.float64)
    out = upsample(src, (12, 17))

    def coords(n_in, n_out):
        return np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)

    rows = np.stack([np.interp(coords(7, 17), np.arange(7), r) for r in src.numpy()])
    expected = np.stack([np.interp(coords(5, 12), np.arange(5), c) for c in rows.T]).T
    assert_close_in_ulps(out, torch.from_numpy(expected), ulps=8)  # two 2-term interpolations


def test_all_zero_maps_stay_zero_without_nan():
    model = make_gapnet()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    maps = grad_cam(model, x, lambda out: out[:, 0] * 0.0, "features.3")
    assert not torch.isnan(maps).any()
    assert (maps == 0).all()
    assert (normalize_maps(torch.full((2, 4, 4), 3.0)) == 0).all()


def test_normalize_is_min_max_per_map():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[-2.0, 0.0], [2.0, 0.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.5], [1.0, 0.5]]])
    torch.testing.assert_close(normalize_maps(maps), expected)


def test_gradient_stops_at_the_layer(lite0, photos):
    """Below the layer no graph is recorded: the cost of a Grad-CAM is about one forward."""
    recorded = []
    handle = lite0.features[3].register_forward_hook(lambda m, i, out: recorded.append(out.requires_grad))
    try:
        grad_cam(lite0, photos[:1], CAT, "features.8")
    finally:
        handle.remove()
    assert recorded == [False]


def test_capture_exposes_activations_and_gradients_of_a_backward():
    model = make_gapnet(inplace=True)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with capture(model, model.features[2]) as cap:
        model(x)[0, 1].backward()
    A, g = cap.activations, cap.gradients
    model.zero_grad(set_to_none=True)
    # above features.2 come relu, GAP, fc: dy/dA = w_1 / Z * 1[A > 0]
    expected = model.fc.weight[1][:, None, None] / 25 * (A[0] > 0)
    assert_close_in_ulps(g[0], expected, ulps=4)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --- the model, its parameters, the input and the hooks are left as they were -----------------


def snapshot(model, x):
    return {
        "modes": [m.training for m in model.modules()],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "x": x.clone(),
        "grad_mode": torch.is_grad_enabled(),
    }


def assert_untouched(model, x, before):
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    assert not [name for name, m in model.named_modules() for d in hook_dicts if getattr(m, d)], "a hook was left behind"
    assert [m.training for m in model.modules()] == before["modes"]
    for p, q in zip(model.parameters(), before["params"]):
        assert torch.equal(p, q)
    for b, c in zip(model.buffers(), before["buffers"]):
        assert torch.equal(b, c)
    for p, g in zip(model.parameters(), before["grads"]):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert torch.equal(x, before["x"]) and not x.requires_grad and x.grad is None
    assert torch.is_grad_enabled() == before["grad_mode"]


def raising_target(out):
    raise RuntimeError("target failed on purpose")


CALLS = {
    "int": dict(target=1),
    "table": dict(target=[[0, 1], [2, 3]]),
    "callable": dict(target=lambda out: out[:, 2]),
    "counterfactual": dict(target=1, counterfactual=True),
    "raising target": dict(target=raising_target, error=RuntimeError),
    "out of range": dict(target=5, error=IndexError),
    "wrong length": dict(target=[1, 2, 3], error=ValueError),
    "not 4-D": dict(target=1, layer="fc", error=ValueError),
    "unknown layer": dict(target=1, layer="featurs.1", error=ValueError),
}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("call", list(CALLS))
def test_call_leaves_everything_as_it_was(call, mode):
    spec = dict(CALLS[call])
    model = make_gapnet(inplace=True).train(mode == "train")
    model.fc.weight.grad = torch.randn_like(model.fc.weight)  # one parameter with a .grad, the others None
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    before = snapshot(model, x)
    error = spec.pop("error", None)
    layer = spec.pop("layer", "features.1")
    if error:
        with pytest.raises(error):
            grad_cam(model, x, layer=layer, **spec)
    else:
        assert grad_cam(model, x, layer=layer, **spec).max() > 0
    assert_untouched(model, x, before)


def test_call_under_no_grad_works_and_keeps_grad_mode_off(lite0, photos):
    with torch.no_grad():
        maps = grad_cam(lite0, photos[:1], CAT, "features.8")
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(maps, grad_cam(lite0, photos[:1], CAT, "features.8"))


def test_batchnorm_in_training_mode_warns():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 3, 6, 6)
    model(x)
    with pytest.warns(UserWarning, match="training mode"):
        grad_cam(model, x, 0, "1")


# --- clear errors ------------------------------------------------------------------------------


def test_unknown_layer_name_lists_near_names(lite0, photos):
    with pytest.raises(ValueError, match=r"'features\.88'.*features\.8"):
        grad_cam(lite0, photos[:1], CAT, "features.88")


def test_layer_module_not_in_model(lite0, photos):
    with pytest.raises(ValueError, match="not a submodule"):
        grad_cam(lite0, photos[:1], CAT, nn.Conv2d(1, 1, 1))


def test_target_out_of_range_names_it(lite0, photos):
    with pytest.raises(IndexError, match=r"1000 .*1000 classes"):
        grad_cam(lite0, photos[:1], 1000, "features.8")
    with pytest.raises(IndexError, match="-1"):
        grad_cam(lite0, photos, [CAT, -1, CAT], "features.8")


def test_target_list_of_wrong_length(lite0, photos):
    with pytest.raises(ValueError, match="2 entries but the batch holds 3"):
        grad_cam(lite0, photos, [CAT, CAT], "features.8")
    with pytest.raises(ValueError, match="1 entries but the batch holds 3"):
        grad_cam(lite0, photos, [[CAT, ESPRESSO]], "features.8")


def test_layer_output_not_4d_says_its_shape(lite0, photos):
    with pytest.raises(ValueError, match=r"'classifier\.1' returned shape \(1, 1000\)"):
        grad_cam(lite0, photos[:1], CAT, "classifier.1")


def test_bad_target_types():
    model, x = make_gapnet(), torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="bool"):
        grad_cam(model, x, True, "features")
    with pytest.raises(TypeError, match="integer class indices"):
        grad_cam(model, x, torch.tensor([1.0]), "features")
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        grad_cam(model, x, lambda out: out, "features")
    with pytest.raises(ValueError, match="do not depend"):
        grad_cam(model, x, lambda out: torch.zeros(1), "features")


def test_bad_input_and_size():
    model = make_gapnet()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got shape \(3, 4, 4\)"):
        grad_cam(model, torch.randn(3, 4, 4, dtype=torch.float64), 0, "features")
    with pytest.raises(ValueError, match="size must be"):
        grad_cam(model, torch.randn(1, 3, 4, 4, dtype=torch.float64), 0, "features", size=(0, 4))


def test_layer_that_runs_twice_or_never():
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu, nn.Flatten(), nn.Linear(3 * 16, 2)).eval()
    with pytest.raises(RuntimeError, match="ran 2 times"):
        grad_cam(twice, torch.randn(1, 3, 4, 4), 0, "1")
    model = make_gapnet()
    model.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(RuntimeError, match="did not run"):
        grad_cam(model, torch.randn(1, 3, 4, 4, dtype=torch.float64), 0, "unused")


def test_cam_errors():
    A = torch.randn(2, 6, 3, 3)
    with pytest.raises(ValueError, match=r"\(num_classes, 6\)"):
        cam(A, torch.randn(5, 4), 0)
    with pytest.raises(IndexError, match="out of range"):
        cam(A, torch.randn(5, 6), [0, 5])
