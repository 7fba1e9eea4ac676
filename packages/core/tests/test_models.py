"""The base models: the Classifier contract, options, and weights loading without network."""

from __future__ import annotations

import urllib.error

import pydantic
import pytest
import torch
import torchvision
from torch import nn

from robust import builtins
from robust.errors import RobustError
from robust.models.classifier import Classifier
from robust.models.cnn import build_cnn
from robust.models.mlp import MLPConfig, build_mlp
from robust.models.resnet_cifar import build_resnet20, build_resnet32
from robust.models.torchvision_resnet import WeightsError, build_resnet18, build_resnet50
from robust.registry import resolve_reference


@pytest.fixture(autouse=True)
def no_download(monkeypatch, tmp_path):
    """Point torch hub at an empty cache and make any download fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


CASES = [
    # (builder, options, input shape, feature dim)
    (build_mlp, {}, (3, 28, 28), 100),
    (build_mlp, {"hidden_sizes": [32, 16], "input_scale": 1 / 255}, (1, 28, 28), 16),
    (build_cnn, {}, (3, 16, 16), 256),
    (build_cnn, {"width": 8, "depth": 2}, (1, 28, 28), 16),
    (build_cnn, {}, (3, 17, 23), 256),
    (build_resnet20, {}, (3, 32, 32), 64),
    (build_resnet20, {"width": 5}, (1, 28, 28), 20),
    (build_resnet32, {}, (3, 32, 32), 64),
    (build_resnet18, {}, (3, 32, 32), 512),
    (build_resnet18, {"small_input_stem": True}, (3, 32, 32), 512),
    (build_resnet18, {}, (1, 64, 64), 512),
    (build_resnet50, {}, (3, 32, 32), 2048),
]
IDS = [f"{b.__name__}-{'x'.join(map(str, s))}-{i}" for i, (b, _, s, _) in enumerate(CASES)]


@pytest.mark.parametrize(("builder", "options", "shape", "feature_dim"), CASES, ids=IDS)
def test_classifier_contract(builder, options, shape, feature_dim):
    torch.manual_seed(0)
    model = builder(options, num_classes=3, input_shape=shape)
    assert isinstance(model, Classifier) and isinstance(model.head, nn.Linear)
    assert model.feature_dim == feature_dim and model.head.in_features == feature_dim
    x = torch.randn(2, *shape)
    assert model.features(x).shape == (2, feature_dim)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    first = next(p for p in model.encoder.parameters())
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize(("builder", "options", "shape", "feature_dim"), CASES[::2], ids=IDS[::2])
def test_state_dict_round_trip(builder, options, shape, feature_dim):
    torch.manual_seed(0)
    source = builder(options, 4, shape)
    torch.manual_seed(1)
    target = builder(options, 4, shape)
    x = torch.randn(2, *shape)
    source.eval(), target.eval()
    assert not torch.allclose(source(x), target(x))
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(source(x), target(x))


def test_builtin_references_resolve():
    found = {}
    builtins.register_models(register=lambda name, target, config=None, **kw: found.update({name: (target, config)}))
    builtins.register_losses(register=lambda name, target, config=None, **kw: found.update({name: (target, config)}))
    assert set(found) == {"mlp", "cnn", "resnet20", "resnet32", "resnet18", "resnet50", "ce"}
    for name, (target, config) in found.items():
        assert callable(resolve_reference(target)), name
        options = resolve_reference(config)
        assert issubclass(options, pydantic.BaseModel)
        assert all(field.description for field in options.model_fields.values()), name
        if name != "ce":
            model = resolve_reference(target)(options(), num_classes=2, input_shape=(3, 32, 32))
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_mlp_default_is_lff_3x100_and_scales_input():
    model = build_mlp(MLPConfig(), 10, (3, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2352, 100), (100, 100), (100, 100), (100, 10)]
    scaled = build_mlp(MLPConfig(input_scale=0.5), 10, (3, 28, 28))
    scaled.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 28, 28) * 255
    torch.testing.assert_close(scaled(x), model(x * 0.5))
    with pytest.raises(pydantic.ValidationError):
        MLPConfig(hidden_sizes=[])
    with pytest.raises(pydantic.ValidationError):
        MLPConfig(hidden=[10])


def test_cifar_resnet_matches_reference_sizes():
    # Parameter counts of the common implementation (akamaster/pytorch_resnet_cifar10).
    assert sum(p.numel() for p in build_resnet20(None, 10, (3, 32, 32)).parameters()) == 269_722
    assert sum(p.numel() for p in build_resnet32(None, 10, (3, 32, 32)).parameters()) == 464_154


# --- torchvision weights -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_resnet18():
    torch.manual_seed(123)
    return torchvision.models.resnet18(num_classes=1000)


def assert_encoder_equals(model, reference):
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    actual = model.encoder.state_dict()
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key)


@pytest.mark.parametrize("with_fc", [True, False])
def test_resnet18_weights_from_local_file(tmp_path, reference_resnet18, with_fc):
    state = reference_resnet18.state_dict()
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_resnet18({"weights": str(path)}, 5, (3, 64, 64))
    assert_encoder_equals(model, reference_resnet18)
    assert model.head.out_features == 5


def test_weights_file_with_wrong_keys(tmp_path, reference_resnet18):
    state = dict(reference_resnet18.state_dict())
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"`model\.weights`") as info:
        build_resnet18({"weights": str(path)}, 2, (3, 32, 32))
    assert "layer1.0.conv1.weight" in info.value.message and "extra.weight" in info.value.message
    # resnet18 weights do not fit resnet50
    torch.save(reference_resnet18.state_dict(), path)
    with pytest.raises(WeightsError, match="resnet50"):
        build_resnet50({"weights": str(path)}, 2, (3, 32, 32))


def test_weights_file_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"`model\.weights`"):
        build_resnet18({"weights": str(path)}, 2, (3, 32, 32))


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match=r"`model\.weights`") as info:
        build_resnet18({"weights": str(tmp_path / "nope.pth")}, 2, (3, 32, 32))
    assert "does not exist" in info.value.message
    assert isinstance(info.value, RobustError)


def test_unknown_weights_name():
    with pytest.raises(WeightsError, match=r"`model\.weights`") as info:
        build_resnet18({"weights": "IMAGENET1K_V9"}, 2, (3, 32, 32))
    assert "IMAGENET1K_V1" in info.value.message and "DEFAULT" in info.value.message


def test_download_failure_says_how_to_fix(tmp_path):
    with pytest.raises(WeightsError) as info:
        build_resnet18({"weights": "IMAGENET1K_V1"}, 2, (3, 32, 32))
    message = info.value.message
    assert "--set model.weights=/path/to/file.pth" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "network disabled" in message


def test_enum_name_loads_what_torch_hub_returns(monkeypatch, reference_resnet18):
    calls = []

    def fake_hub(url, *args, **kwargs):
        calls.append(url)
        return reference_resnet18.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    model = build_resnet18({"weights": "default"}, 2, (3, 32, 32))
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    assert_encoder_equals(model, reference_resnet18)


def test_pretrained_with_small_stem_or_grayscale(tmp_path, reference_resnet18):
    path = tmp_path / "resnet18.pth"
    torch.save(reference_resnet18.state_dict(), path)
    with pytest.warns(UserWarning, match="stem is trained from scratch"):
        model = build_resnet18({"weights": str(path), "small_input_stem": True}, 2, (3, 32, 32))
    assert model.encoder.conv1.weight.shape == (64, 3, 3, 3)
    assert isinstance(model.encoder.maxpool, nn.Identity)
    torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, reference_resnet18.layer1[0].conv1.weight)
    gray = build_resnet18({"weights": str(path)}, 2, (1, 64, 64))
    torch.testing.assert_close(gray.encoder.conv1.weight, reference_resnet18.conv1.weight.sum(1, keepdim=True))
