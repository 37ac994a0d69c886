"""Model builders: offline ImageNet weights, grey input, replaced heads."""

import pytest
import torch

from learn import ConfigError
from learn.surface.models import WeightsNotFoundError, build_model, imagenet_weights_path


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def _rgb_resnet18():
    torch.manual_seed(0)
    return build_model("resnet18", weights=None, in_channels=3, num_outputs=1000)


def test_build_model_weights_from_file(tmp_path):
    ref = _rgb_resnet18()
    path = tmp_path / "resnet18-random.pth"
    torch.save(ref.state_dict(), path)
    model = build_model("resnet18", weights=str(path), in_channels=1, num_outputs=1)
    for k, v in ref.state_dict().items():
        if k.startswith("fc.") or k == "conv1.weight":
            continue
        assert torch.equal(model.state_dict()[k], v), k
    torch.testing.assert_close(model.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))
    assert model.fc.out_features == 1 and model.fc.in_features == 512


def test_build_model_imagenet_from_hub_cache(hub_dir):
    ref = _rgb_resnet18()
    path = imagenet_weights_path("resnet18")
    assert path.parent == hub_dir / "checkpoints" and path.name.startswith("resnet18-")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    model = build_model("resnet18", weights="imagenet", in_channels=3)
    assert torch.equal(model.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(model.conv1.weight, ref.conv1.weight) and model.fc.out_features == 1


def test_build_model_imagenet_missing_says_where(hub_dir):
    with pytest.raises(WeightsNotFoundError, match=r"not on this machine: expected .*resnet50-0676ba61\.pth"):
        build_model("resnet50", weights="imagenet")


def test_build_model_missing_file():
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        build_model("resnet18", weights="/nonexistent/weights.pth")


def test_build_model_wrong_architecture_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(build_model("tiny", weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit ResNet"):
        build_model("resnet18", weights=str(path))


def test_grey_conv_equals_rgb_network_on_replicated_image():
    ref = _rgb_resnet18().eval()
    grey = build_model("resnet18", weights=None, in_channels=1, num_outputs=1000)
    sd = {k: v for k, v in ref.state_dict().items()}
    sd["conv1.weight"] = ref.conv1.weight.sum(dim=1, keepdim=True)
    grey.load_state_dict(sd)
    grey.eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(grey(x), ref(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "tiny"])
def test_build_model_from_scratch_one_logit(name):
    model = build_model(name, weights=None, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 1)


def test_build_model_bad_names():
    with pytest.raises(ConfigError, match="model 'name' should be one of"):
        build_model("vgg16", weights=None)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build_model("tiny", weights="imagenet")
    with pytest.raises(ConfigError, match="'weights' should be 'imagenet', a file path or None"):
        build_model("resnet18", weights=3)
