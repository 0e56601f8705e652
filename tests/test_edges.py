"""At the edges every method raises a clear error or gives the right map, never a wrong map without a word."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import assert_close_in_ulps, calls_in_two_threads
from torch import nn

from gradcam_lite import deconvnet, grad_cam, grad_cam_pp, guided_backprop, guided_grad_cam, hires_cam, smooth_grad_cam_pp

LAYER = "2"


def small_net() -> nn.Module:
    """conv-ReLU-conv-BN-ReLU6, pooling, linear: 4 classes, float64, eval mode."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).double().eval()


METHODS = {
    "grad_cam": lambda m, x, t: grad_cam(m, x, t, LAYER),
    "hires_cam": lambda m, x, t: hires_cam(m, x, t, LAYER),
    "grad_cam_pp": lambda m, x, t: grad_cam_pp(m, x, t, LAYER),
    "smooth_grad_cam_pp": lambda m, x, t: smooth_grad_cam_pp(m, x, t, LAYER, n_samples=2, sigma=0.1, generator=torch.Generator().manual_seed(0)),
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "guided_grad_cam": lambda m, x, t: guided_grad_cam(m, x, t, LAYER),
}
MAP_METHODS = {name: METHODS[name] for name in ("grad_cam", "hires_cam", "grad_cam_pp", "smooth_grad_cam_pp")}


# --- a constant map is all zero, not rounding noise stretched to [0, 1] ------------------------


@pytest.mark.parametrize("method", list(MAP_METHODS))
def test_constant_layer_map_gives_zero_map(method):
    """A random resnet18 on a 32 x 32 input: layer4 is 1 x 1, so every map is constant before resizing."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    raw = grad_cam(model, x, [list(range(10))] * 2, "layer4", size=None, normalize=False)
    assert raw.shape[-2:] == (1, 1)
    positive = [int(c) for c in torch.nonzero(raw[0, :, 0, 0] > 0).flatten()]
    assert positive, "the test needs a class with a positive (constant) map"
    fn = {"grad_cam": grad_cam, "hires_cam": hires_cam, "grad_cam_pp": grad_cam_pp, "smooth_grad_cam_pp": smooth_grad_cam_pp}[method]
    maps = fn(model, x, positive[0], "layer4")
    assert maps.shape == (2, 32, 32)
    assert (maps == 0).all(), f"a constant map came out with mean {float(maps.mean()):.3f}"


def test_upsampled_constant_is_not_exactly_constant_so_constancy_is_decided_before():
    """Why the decision is taken at the layer's resolution: bilinear weights do not sum to 1 exactly."""
    from gradcam_lite.maps import normalize_maps, upsample

    constant = torch.full((1, 1, 1), 0.1)
    resized = upsample(constant, (32, 32))
    assert resized.max() > resized.min()  # rounding made it non-constant
    assert normalize_maps(resized).max() == 1.0  # which plain min-max stretches to [0, 1]
    assert (normalize_maps(resized, constant=torch.tensor([True])) == 0).all()


def test_signed_constant_map_is_zero_and_varying_maps_still_span_zero_to_one():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    signed = grad_cam(model, torch.randn(1, 3, 32, 32), 3, "layer4", relu=False)
    assert (signed == 0).all()
    varying = grad_cam(model, torch.randn(1, 3, 96, 96), 3, "layer4")  # layer4 is 3 x 3 here
    assert float(varying.min()) == 0.0 and float(varying.max()) == 1.0


# --- NaN or Inf in the input is an error naming the images ---------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_non_finite_images_are_named(method):
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    x[0, 1, 2, 2] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"images \[0, 2\] of the batch hold NaN or infinite values"):
        METHODS[method](small_net(), x, 1)


@pytest.mark.parametrize("method", list(METHODS))
def test_nan_inside_the_model_is_an_error_not_a_zero_map(method):
    model = small_net()
    with torch.no_grad():
        model[7].weight[1, 3] = float("nan")  # the score of class 1 is NaN for every image
    with pytest.raises(ValueError, match="NaN or infinite values for images"):
        METHODS[method](model, torch.randn(2, 3, 6, 6, dtype=torch.float64), 1)


# --- targets: integers only, in every form ----------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [[1.5, 2.7], [1.0, 2.0], 2.0, np.float64(1.0), np.array([1.5, 0.5]), [[1.0, 2.0], [0.0, 1.0]], np.array([[1.0], [2.0]])],
    ids=["floats", "integral floats", "float scalar", "numpy float", "float array", "nested floats", "float table"],
)
def test_float_targets_are_refused_not_truncated(target):
    with pytest.raises(TypeError, match="integer class indices|an int"):
        grad_cam(small_net(), torch.randn(2, 3, 6, 6, dtype=torch.float64), target, LAYER)


@pytest.mark.parametrize(
    "target", [True, [True, 1], np.bool_(True), np.array([True, False]), torch.tensor([True, False])],
    ids=["bool", "bool in list", "numpy bool", "bool array", "bool tensor"],
)
def test_bool_targets_are_refused(target):
    with pytest.raises(TypeError, match="bool"):
        grad_cam(small_net(), torch.randn(2, 3, 6, 6, dtype=torch.float64), target, LAYER)


@pytest.mark.parametrize(
    ("numpy_target", "plain_target"),
    [(np.int64(3), 3), (np.int32(1), 1), (np.array([1, 3]), [1, 3]), (np.array([[0, 2], [3, 1]], dtype=np.uint8), [[0, 2], [3, 1]])],
    ids=["int64", "int32", "array", "uint8 table"],
)
def test_numpy_integer_targets_are_accepted(numpy_target, plain_target):
    model, x = small_net(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    for method in METHODS.values():
        torch.testing.assert_close(method(model, x, numpy_target), method(model, x, plain_target), rtol=0, atol=0)


def test_ragged_and_string_targets_are_refused():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(TypeError, match="table of ints"):
        grad_cam(small_net(), x, [[1, 2], [3]], LAYER)
    with pytest.raises(TypeError, match="got str"):
        grad_cam(small_net(), x, "1", LAYER)


# --- inference mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_inside_inference_mode_the_error_names_it(method):
    model, x = small_net(), torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"torch\.inference_mode\(\).*outside"):
        METHODS[method](model, x, 1)


@pytest.mark.parametrize("method", list(METHODS))
def test_an_input_made_under_inference_mode_works_outside_it(method):
    model, x = small_net(), torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch.inference_mode():
        x_inference = x.clone()
    assert x_inference.is_inference()
    torch.testing.assert_close(METHODS[method](model, x_inference, 1), METHODS[method](model, x, 1), rtol=0, atol=0)


def test_a_model_made_under_inference_mode_is_named():
    with torch.inference_mode():
        model = small_net()
    with pytest.raises(RuntimeError, match="parameters were created under torch.inference_mode"):
        grad_cam(model, torch.randn(1, 3, 6, 6, dtype=torch.float64), 1, LAYER)


# --- wrappers: the modes that count are the wrapped modules' own ------------------------------


def test_data_parallel_around_an_eval_model_does_not_warn_and_gives_the_same_map():
    model = small_net()
    wrapped = nn.DataParallel(model)
    assert wrapped.training and not model.training
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = grad_cam(wrapped, x, 1, "module." + LAYER)
    torch.testing.assert_close(maps, grad_cam(model, x, 1, LAYER), rtol=0, atol=0)


def test_a_batchnorm_in_training_mode_inside_an_eval_wrapper_warns():
    model = small_net()
    wrapper = nn.Sequential(model).eval()
    model[3].train()
    with pytest.warns(UserWarning, match="training mode"):
        grad_cam(wrapper, torch.randn(2, 3, 6, 6, dtype=torch.float64), 1, "0." + LAYER)


# --- two threads, one model -------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_concurrent_calls_on_one_model_give_the_sequential_maps(method):
    """Two threads x 40 calls on one shared model: each call's hooks must see only its own forward."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).double().eval()
    fn = METHODS[method]
    inputs = [torch.randn(2, 3, 24, 24, dtype=torch.float64) for _ in range(2)]
    targets = [[0, 3], [2, 1]]
    expected = [fn(model, x, t) for x, t in zip(inputs, targets)]
    results = calls_in_two_threads([lambda i=i: fn(model, inputs[i], targets[i]) for i in range(2)], repeats=40)
    for index in range(2):
        for got in results[index]:
            assert_close_in_ulps(got, expected[index], ulps=2 * 144)  # 3 x 3 x 16 convolutions: 144 terms
    assert not [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]


# --- wrong dtypes and outputs that are not a logit tensor -------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_wrong_input_dtype_says_what_was_expected(method):
    model = small_net()
    pixels = torch.randint(0, 256, (1, 3, 6, 6), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"floating-point images, got dtype torch\.uint8"):
        METHODS[method](model, pixels, 1)
    with pytest.raises(TypeError, match=r"dtype torch\.float32 but the model's parameters are torch\.float64"):
        METHODS[method](model, torch.randn(1, 3, 6, 6), 1)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        return {"logits": self.net(x), "features": x}


class TupleOutput(DictOutput):
    def forward(self, x):
        return self.net(x), x


def test_dict_or_tuple_output_with_class_index_says_to_pass_a_callable():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"returned a dict with keys \['logits', 'features'\].*callable"):
        grad_cam(DictOutput().eval(), x, 1, "net." + LAYER)
    with pytest.raises(TypeError, match=r"returned a tuple.*callable"):
        guided_backprop(TupleOutput().eval(), x, 1)
    model = DictOutput().eval()
    by_callable = grad_cam(model, x, lambda out: out["logits"][:, 1], "net." + LAYER)
    torch.testing.assert_close(by_callable, grad_cam(model.net, x, 1, LAYER), rtol=0, atol=0)
