"""Token and channels-last layers (Vision Transformers, Swin): read as maps by a stated rule, never a silent wrong map."""

import warnings

import pytest
import torch
import torchvision
from conftest import activations_and_gradients, assert_close_in_ulps, calls_in_two_threads
from test_engine import assert_untouched, snapshot
from test_gradcam_pp import reference_grad_cam_pp
from torch import nn

from gradcam_lite import TokenGrid, grad_cam, grad_cam_pp, guided_grad_cam
from gradcam_lite.layouts import infer_layout, matches
from gradcam_lite.maps import normalize_maps, upsample

RAW = dict(size=None, normalize=False)
VIT_LN = "encoder.layers.encoder_layer_11.ln_1"
VIT_LAST = "encoder.layers.encoder_layer_11"


@pytest.fixture(scope="module")
def vit():
    """torchvision's ViT-B/16 with random weights; its head starts at zero (torchvision's init), which would make every gradient 0."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None).eval()


@pytest.fixture(scope="module")
def images():
    """One image: a ViT-B/16 pass costs about a second on 2 cores; batches are tested on the small ViT below."""
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def tokens_as_maps(values, prefix, side):
    """By hand: drop the prefix tokens, lay the patches row by row on a side x side grid, channels first."""
    return values[:, prefix:].reshape(values.shape[0], side, side, values.shape[-1]).permute(0, 3, 1, 2)


def hand_made_maps(model, x, target, layer, to_maps):
    """Second implementation: a full backward with a retained gradient, the output reshaped by ``to_maps``; eq. 1 and 2."""
    A, g = activations_and_gradients(model, x, model.get_submodule(layer), lambda out: out[:, target])
    A, g = to_maps(A), to_maps(g)
    alpha = g.sum(dim=(2, 3)) / (g.shape[2] * g.shape[3])
    return A, g, (alpha[:, :, None, None] * A).sum(dim=1).clamp(min=0)


CASES = {
    "vit tokens": ("vit", VIT_LN, lambda v: tokens_as_maps(v, 1, 14)),
    "swin channels last": ("swin", "features.7", lambda v: v.permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_grad_cam_pp_and_guided_grad_cam_equal_hand_made_maps_of_the_reshaped_layer(case, request, images):
    name, layer, to_maps = CASES[case]
    model = request.getfixturevalue(name)
    A, g, expected = hand_made_maps(model, images, 3, layer, to_maps)
    C, Z = A.shape[1], A.shape[2] * A.shape[3]
    assert expected.max() > 0, "the test needs a non-empty map"
    got = grad_cam(model, images, 3, layer, **RAW)
    assert_close_in_ulps(got, expected, ulps=2 * (C + Z))  # C channels and Z positions summed in other orders
    expected_pp = torch.from_numpy(reference_grad_cam_pp(A[0].double(), g[0].double())).float()
    assert_close_in_ulps(grad_cam_pp(model, images, 3, layer, **RAW)[0], expected_pp, ulps=4 * (C + Z))
    # guided backprop is the plain gradient here (GELU, no ReLU module), times the map upsampled and normalised
    leaf = images.clone().requires_grad_()
    model(leaf)[:, 3].sum().backward()
    model.zero_grad(set_to_none=True)
    fused = guided_grad_cam(model, images, 3, layer)
    expected_fused = leaf.grad * normalize_maps(upsample(expected, (224, 224)))[:, None]
    assert_close_in_ulps(fused, expected_fused, ulps=2 * (C + Z) * 4)


def test_inferred_layouts_equal_the_explicit_ones(vit, swin, images):
    torch.testing.assert_close(grad_cam(vit, images, 3, VIT_LN), grad_cam(vit, images, 3, VIT_LN, layout=TokenGrid(14, 14, prefix=1)), rtol=0, atol=0)
    torch.testing.assert_close(grad_cam(swin, images, 3, "features.7"), grad_cam(swin, images, 3, "features.7", layout="channels_last"), rtol=0, atol=0)


def test_reading_swin_channels_first_would_be_a_different_map(swin, images):
    """What the engine did before: (B, 7, 7, 768) read as 7 channels of 7 x 768. Forcing that reading shows the gap."""
    right = grad_cam(swin, images, 3, "features.7", size=None)
    wrong = grad_cam(swin, images, 3, "features.7", size=None, layout="channels_first")
    assert right.shape == (1, 7, 7) and wrong.shape == (1, 7, 768)
    assert float((upsample(wrong, (7, 7)) - right).abs().max()) > 0.3


def test_swin_on_a_wide_input_is_read_channels_last(swin):
    x = torch.randn(1, 3, 224, 320, generator=torch.Generator().manual_seed(1))
    A, g, expected = hand_made_maps(swin, x, 5, "features.7", lambda v: v.permute(0, 3, 1, 2))
    assert A.shape[-2:] == (7, 10)
    assert_close_in_ulps(grad_cam(swin, x, 5, "features.7", **RAW), expected, ulps=2 * (768 + 70))


# --- the last block of a ViT: patch tokens do not reach the output -------------------------------


def test_vit_last_block_output_is_an_exact_zero_and_named(vit, images):
    with pytest.warns(UserWarning, match=r"exactly zero at every position of layer 'encoder\.layers\.encoder_layer_11' for images \[0\].*"
                                         r"Only the prefix \(class\) tokens carry a gradient.*ln_1"):
        maps = grad_cam(vit, images, 3, VIT_LAST, **RAW)
    assert (maps == 0).all()
    # the same block's ln_1 is read by the class token through attention: a map with content
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert grad_cam(vit, images, 3, VIT_LN, **RAW).max() > 0


def test_an_all_zero_gradient_without_tokens_says_so_without_the_token_hint():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    with torch.no_grad():
        model[2].weight[1] = 0  # class 1 ignores every position
    with pytest.warns(UserWarning, match=r"for images \[0, 1\].*Try an earlier layer") as record:
        assert (grad_cam(model, torch.randn(2, 3, 6, 6), 1, "0", **RAW) == 0).all()
    assert "prefix" not in str(record[0].message)


# --- the rule, on shapes alone ---------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "size", "expected"), [
    ((2, 197, 768), (224, 224), TokenGrid(14, 14, 1)),  # ViT-B/16: a class token and 14 x 14 patches
    ((2, 196, 768), (224, 224), TokenGrid(14, 14, 0)),  # no class token (a global-pool ViT)
    ((2, 50, 64), (64, 64), TokenGrid(7, 7, 1)),
    ((2, 281, 32), (224, 320), TokenGrid(14, 20, 1)),  # the aspect ratio decides 14 x 20, not 10 x 28 or 20 x 14
    ((2, 7, 7, 768), (224, 224), "channels_last"),  # Swin
    ((2, 7, 10, 768), (224, 300), "channels_last"),  # 224 / 32 = 7, 300 / 32 rounds to 9 or 10: one side rounded
    ((2, 768, 7, 7), (224, 224), "channels_first"),
    ((2, 7, 7, 10), (224, 224), "channels_last"),  # 10 channels: (7, 10) is not square
    ((2, 64, 8, 8), (64, 64), "channels_first"),
    ((2, 8, 8, 8), (64, 64), "channels_first"),  # either reading fits: a conv map stays a conv map
])
def test_inference_rule(shape, size, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert infer_layout(shape, size, "layer") == expected


def test_ambiguous_conv_map_stays_channels_first_and_an_explicit_layout_reads_it_channels_last():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=8, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.randn(2, 3, 64, 64)
    A, g, expected = hand_made_maps(model, x, 1, "1", lambda v: v)
    assert A.shape == (2, 8, 8, 8)  # dims (1, 2) and (2, 3) both match a square input
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = grad_cam(model, x, 1, "1", **RAW)
    assert_close_in_ulps(got, expected, ulps=2 * (8 + 64))
    _, _, as_channels_last = hand_made_maps(model, x, 1, "1", lambda v: v.permute(0, 3, 1, 2))
    assert_close_in_ulps(grad_cam(model, x, 1, "1", **RAW, layout="channels_last"), as_channels_last, ulps=2 * (8 + 64))
    assert float((as_channels_last - got).abs().max()) > 0.1 * float(got.max())  # the two readings are different maps


def test_matches_is_the_aspect_ratio_up_to_rounding_one_side():
    assert matches(7, 7, (224, 224)) and matches(14, 20, (224, 320)) and matches(8, 8, (230, 230))
    assert not matches(7, 768, (224, 224)) and not matches(10, 28, (224, 320)) and not matches(6, 9, (9, 11))


# --- errors that name the shape, what was tried and what to pass ------------------------------------


class DistilledTokens(nn.Module):
    """A toy ViT with a class and a distillation token (DeiT): N = 2 + h w, which the rule does not guess."""

    def __init__(self, prefix: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.prefix = nn.Parameter(torch.randn(1, prefix, 16))
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.mix(tokens)
        return self.head(tokens.mean(dim=1))  # every token reaches the output


def test_tokens_with_a_distillation_token_need_a_token_grid():
    torch.manual_seed(0)
    model, x = DistilledTokens().eval(), torch.randn(2, 3, 56, 56)
    with pytest.raises(ValueError, match=r"'mix' returned shape \(2, 51, 16\).*prefix of 0 or 1.*none of them matches.*TokenGrid\(height, width, prefix\).*prefix=2"):
        grad_cam(model, x, 1, "mix")
    A, g, expected = hand_made_maps(model, x, 1, "mix", lambda v: tokens_as_maps(v, 2, 7))
    assert_close_in_ulps(grad_cam(model, x, 1, "mix", **RAW, layout=TokenGrid(7, 7, prefix=2)), expected, ulps=2 * (16 + 49))


def test_explicit_layouts_that_do_not_fit_are_named(vit, swin, images):
    with pytest.raises(ValueError, match=r"shape \(1, 197, 768\), which is not \(B, N, C\) tokens with N = 1 \+ 14 x 15"):
        grad_cam(vit, images, 3, VIT_LN, layout=TokenGrid(14, 15, prefix=1))
    with pytest.raises(ValueError, match=r"shape \(1, 197, 768\), which is not a 4-D map as layout='channels_last' says"):
        grad_cam(vit, images, 3, VIT_LN, layout="channels_last")
    with pytest.raises(ValueError, match=r"layout must be None .* got 'NHWC'"):
        grad_cam(swin, images, 3, "features.7", layout="NHWC")
    with pytest.raises(ValueError, match=r"TokenGrid needs height, width >= 1"):
        TokenGrid(0, 14)


def test_a_vector_still_raises(vit, images):
    with pytest.raises(ValueError, match=r"'heads' returned shape \(1, 1000\); Grad-CAM needs positions"):
        grad_cam(vit, images, 3, "heads")


class SequenceFirst(nn.Module):
    """Tokens kept sequence first, (N, B, C), as nn.MultiheadAttention does without batch_first."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).permute(2, 0, 1)
        return self.head(self.mix(tokens).mean(dim=0))


def test_a_sequence_first_layer_is_named():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"'mix' returned shape \(16, 2, 8\), whose first dimension is not the batch of 2 images"):
        grad_cam(SequenceFirst().eval(), torch.randn(2, 3, 32, 32), 0, "mix")


# --- the contract holds for these layouts ---------------------------------------------------------------


def small_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4)
    nn.init.normal_(model.heads.head.weight, std=0.1)
    return model.eval()


SMALL_VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
TOKEN_CALLS = {
    "grad_cam": dict(method=grad_cam, target=[1, 2]),
    "grad_cam_pp": dict(method=grad_cam_pp, target=[[1, 2], [0, 3]]),
    "guided_grad_cam": dict(method=guided_grad_cam, target=lambda out: out[:, 1]),
    "out of range": dict(method=grad_cam, target=4, error=IndexError),
    "wrong grid": dict(method=grad_cam, target=1, layout=TokenGrid(4, 5, prefix=1), error=ValueError),
}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("call", list(TOKEN_CALLS))
def test_calls_on_token_layers_leave_everything_as_they_were(call, mode):
    spec = dict(TOKEN_CALLS[call])
    method, error = spec.pop("method"), spec.pop("error", None)
    model = small_vit().train(mode == "train")
    model.heads.head.weight.grad = torch.randn_like(model.heads.head.weight)  # one parameter with a .grad, the others None
    x = torch.randn(2, 3, 32, 32)
    before = snapshot(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # training mode warns, as it should
        if error:
            with pytest.raises(error):
                method(model, x, layer=SMALL_VIT_LAYER, **spec)
        else:
            assert method(model, x, layer=SMALL_VIT_LAYER, **spec).abs().max() > 0
    assert_untouched(model, x, before)


def test_token_layers_under_two_threads_give_the_sequential_maps():
    """Two threads x 20 calls on one shared ViT: each call's hooks must see only its own forward."""
    model = small_vit()
    inputs = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    expected = [grad_cam(model, x, [0, 3], SMALL_VIT_LAYER) for x in inputs]
    results = calls_in_two_threads([lambda x=x: grad_cam(model, x, [0, 3], SMALL_VIT_LAYER) for x in inputs], repeats=20)
    for index in range(2):
        for got in results[index]:
            assert_close_in_ulps(got, expected[index], ulps=2 * 192)  # the patch embedding sums 3 x 8 x 8 terms
