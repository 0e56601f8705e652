import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

from gradcam_lite import data, models


@pytest.mark.parametrize("size", [(224, 224), (200, 264)])
def test_logits_equal_reference_implementation(lite0, size):
    """efficientnet-lite-pytorch pads for a fixed image size, so it is built for each size tried."""
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=models.weights_path(), image_size=size).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, theirs = lite0(x), reference(x)
    assert (ours - theirs).abs().max() <= 1e-4
    assert theirs.abs().max() > 1


def test_every_weight_is_placed(lite0):
    theirs = torch.load(models.weights_path(), weights_only=True)
    mapping = models._reference_key_map(lite0)
    assert sorted(mapping.values()) == sorted(k for k in theirs if not k.endswith("num_batches_tracked"))
    assert sum(p.numel() for p in lite0.parameters()) == sum(v.numel() for k, v in theirs.items() if "running" not in k and "num_batches" not in k)


def test_layout_and_separate_activations(lite0):
    assert [type(m).__name__ for m in lite0.children()] == ["Sequential", "AdaptiveAvgPool2d", "Sequential"]
    assert len(lite0.features) == 9
    relus = [m for m in lite0.modules() if isinstance(m, torch.nn.ReLU6)]
    # stem, head, 1 in the expand-free first block, 2 in each of the other 15 blocks
    assert len(relus) == 1 + 1 + 1 + 2 * 15
    assert len({id(m) for m in relus}) == len(relus)
    assert not lite0.training
    with torch.no_grad():
        assert lite0.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


def test_batchnorm_eps_is_tensorflows(lite0):
    assert {m.eps for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}


@pytest.mark.parametrize("size", [7, 8, 224, 225])
def test_same_padding_puts_the_extra_pixel_bottom_right(size):
    """TF SAME, stride 2, kernel 3: total padding max((ceil(n/2) - 1) * 2 + 3 - n, 0), the smaller half first."""
    conv = models.Conv2dSame(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, size, size)
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    expected = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, stride=2)
    assert conv(x).shape[-1] == -(-size // 2)
    torch.testing.assert_close(conv(x), expected)


@pytest.mark.parametrize(("photo", "label"), [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_photos_read_as_expected(lite0, photo, label):
    (top,) = models.top_classes(lite0, models.preprocess(data.load_image(photo)), k=1)
    assert top[0][1] == label


def test_preprocess_resizes_whole_image_and_standardises():
    """A 2:1 image, left half ImageNet-mean grey and right half white: no crop keeps both halves."""
    mean = tuple(round(255 * m) for m in models.IMAGENET_MEAN)
    image = Image.new("RGB", (400, 200), mean)
    image.paste((255, 255, 255), (200, 0, 400, 200))
    x = models.preprocess(image)
    assert x.shape == (1, 3, 224, 224)
    assert x[0, :, :, :100].abs().max() < 0.01
    white = torch.tensor([(1 - m) / s for m, s in zip(models.IMAGENET_MEAN, models.IMAGENET_STD)])
    torch.testing.assert_close(x[0, :, :, 124:].mean(dim=(1, 2)), white, atol=1e-4, rtol=0)
    torch.testing.assert_close(models.to_display(x)[0, :, 0, 0], torch.tensor(mean) / 255, atol=1e-6, rtol=0)


def test_preprocess_batches_and_rejects_non_images():
    images = [data.load_image("chelsea"), data.load_image("rocket")]
    assert models.preprocess(images).shape == (2, 3, 224, 224)
    with pytest.raises(TypeError, match="PIL image"):
        models.preprocess(torch.zeros(3, 4, 4))


def test_imagenet_classes_and_lookup():
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[285] == "Egyptian cat" and classes[967] == "espresso"
    assert models.class_index("espresso") == 967
    with pytest.raises(KeyError, match="Egyptian cat"):
        models.class_index("egyptian cat")
