import threading
from collections.abc import Callable

import matplotlib
import pytest
import torch
from torch import nn

from gradcam_lite import data, evaluation, models

matplotlib.use("Agg")  # the test process only; notebooks keep their inline backend


class GapNet(nn.Module):
    """conv-ReLU-conv-ReLU, global average pooling, linear: the architecture CAM was made for."""

    def __init__(self, inplace: bool = False, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(inplace))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def make_gapnet(inplace: bool = False, seed: int = 0) -> GapNet:
    torch.manual_seed(seed)
    return GapNet(inplace).double().eval()


def activations_and_gradients(model, x, layer_module, score_fn):
    """Second implementation of the capture: a cloned, retained output and a full backward of score_fn(output)."""
    kept = {}

    def hook(_m, _i, out):
        out = out.clone()
        out.retain_grad()
        kept["A"] = out
        return out

    handle = layer_module.register_forward_hook(hook)
    try:
        score_fn(model(x)).sum().backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return kept["A"].detach(), kept["A"].grad


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state, so every random input is reproducible."""
    torch.manual_seed(0)


def assert_close_in_ulps(actual, expected, ulps: float) -> None:
    """Two computations of the same values that differ only in the order of floating-point operations.

    Summing n terms in any order errs by at most about n units of the dtype's precision (eps) times
    the magnitude of the terms (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002,
    ch. 4), and CPUs' kernels (MKL on Intel, others on AMD; batch or thread count) pick the order.
    So the tolerance is ``ulps * eps * max|expected|``, with ``ulps`` derived by each test from the
    number of terms its computation sums; exact equality is kept for identical sequences of operations.
    """
    scale = float(expected.detach().abs().max())
    assert scale > 0, "comparing against all zeros proves nothing"
    torch.testing.assert_close(actual, expected, rtol=0, atol=ulps * torch.finfo(expected.dtype).eps * scale)


@pytest.fixture(scope="session")
def lite0():
    return models.efficientnet_lite0()


@pytest.fixture(scope="session")
def lite0_cases(lite0):
    """EfficientNet-Lite0 and the photo cases of notebooks 10-13 (evaluation.photo_cases)."""
    return lite0, evaluation.photo_cases(lite0)


@pytest.fixture(scope="session")
def photos():
    """chelsea, coffee and cat_espresso as one preprocessed batch (3, 3, 224, 224)."""
    return models.preprocess([data.load_image(n) for n in ("chelsea", "coffee", "cat_espresso")])


def pytest_addoption(parser):
    parser.addoption("--all-assignments", action="store_true",
                     help="execute every untouched student version through nbgrader autograde (about 8 minutes on 2 cores; "
                          "`make test-assignments`), not only notebook 01's")


def calls_in_two_threads(calls: list[Callable[[], torch.Tensor]], repeats: int) -> list[list[torch.Tensor]]:
    """Run ``calls[i]`` ``repeats`` times in thread i, both threads started together; the results per thread.
    Any call that raised fails the test, with the count and the first error."""
    results: dict[int, list] = {index: [] for index in range(len(calls))}
    start = threading.Barrier(len(calls))

    def work(index: int) -> None:
        start.wait()
        for _ in range(repeats):
            try:
                results[index].append(calls[index]())
            except Exception as error:  # noqa: BLE001 - reported below
                results[index].append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [r for rs in results.values() for r in rs if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} of {len(calls) * repeats} calls raised, e.g. {errors[0]!r}"
    return [results[index] for index in range(len(calls))]
