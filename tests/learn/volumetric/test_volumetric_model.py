import pytest
import torch

from learn.volumetric.model import (
    ADClassifier,
    ConvBN,
    build_ad_model,
    build_age_model,
    build_sex_model,
    count_parameters,
    tf_same_pads,
)


def _shapes(model, names, x):
    out = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, tuple(o.shape)))
             for n in names]
    y = model(x)
    for h in hooks:
        h.remove()
    return out, tuple(y.shape)


def test_sex_model_full_size_shapes_and_parameters():
    with torch.device("meta"):
        model = build_sex_model()
        x = torch.empty(2, 2, 96, 120, 86)
    shapes, y = _shapes(model, ["stem", "repeat_a", "mixed_6a", "repeat_b", "mixed_7a", "conv_7b"], x)
    assert shapes["stem"] == (2, 512, 21, 27, 19)
    assert shapes["repeat_a"] == (2, 512, 21, 27, 19)
    assert shapes["mixed_6a"] == (2, 1280, 10, 13, 9)
    assert shapes["repeat_b"] == (2, 1280, 10, 13, 9)
    assert shapes["mixed_7a"] == (2, 2272, 4, 6, 4)
    assert shapes["conv_7b"] == (2, 1536, 4, 6, 4)
    assert y == (2, 1)
    assert count_parameters(model) == 54_012_539  # Keras trainable count (BN gamma frozen at 1)
    assert count_parameters(model, trainable_only=False) == 54_033_581
    assert len(model.repeat_a) == 5 and len(model.repeat_b) == 10 and len(model.repeat_c) == 5
    assert model.repeat_c[-1].scale == 1.0 and model.repeat_c[-1].activation is False


def test_ad_model_full_size_shapes_and_parameters():
    with torch.device("meta"):
        model = build_ad_model()
        x = torch.empty(1, 2, 96, 120, 86)
    shapes, y = _shapes(model, ["stem", "ad_head.mpool1", "ad_head.conv1", "ad_head.conv2", "ad_head.conv3"], x)
    assert shapes["stem"] == (1, 512, 21, 27, 19)
    assert shapes["ad_head.mpool1"] == (1, 512, 10, 13, 9)
    assert shapes["ad_head.conv1"] == (1, 256, 8, 11, 7)
    assert shapes["ad_head.conv2"] == (1, 256, 4, 6, 4)
    assert shapes["ad_head.conv3"] == (1, 256, 1, 2, 1)
    assert tuple(model.ad_head.concat(model.stem(x)).shape) == (1, 512, 1, 2, 1)
    assert y == (1, 1)
    assert count_parameters(model) == 10_162_017


def test_age_model_head_parameters():
    with torch.device("meta"):
        age = build_age_model()
    # sex network minus Dense(1537) plus Dense 1536->128 (196,736) and 128->1 (129): +196,865 - 1,537
    assert count_parameters(age) == 54_012_539 - 1_537 + 196_865
    with torch.device("meta"):
        y = age(torch.empty(1, 2, 96, 120, 86))
    assert tuple(y.shape) == (1, 1)


def test_tf_same_padding_stride2():
    assert [tf_same_pads(n, 3, 2) for n in (8, 11, 7)] == [(0, 1), (1, 1), (1, 1)]
    conv = ConvBN(4, 3, 3, stride=2, padding="same")
    x = torch.randn(1, 4, 8, 11, 7)
    y = conv(x)
    assert tuple(y.shape) == (1, 3, 4, 6, 4)
    # reference: explicit TF padding (odd voxel at the end) then a valid convolution
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1, 0, 1))
    ref = conv.bn(torch.nn.functional.conv3d(xp, conv.conv.weight, stride=2))
    torch.testing.assert_close(y, torch.relu(ref))


def test_convbn_gamma_frozen_and_bn_settings():
    c = ConvBN(2, 4, 3)
    assert not c.bn.weight.requires_grad and c.bn.bias.requires_grad
    assert c.bn.eps == 1e-3 and c.bn.momentum == 0.01
    assert c.conv.bias is None
    with pytest.raises(ValueError, match="'padding' should be"):
        ConvBN(2, 4, 3, padding="full")


def test_ad_stem_equals_sex_stem_after_transfer():
    torch.manual_seed(0)
    sex = build_sex_model(width_mult=1 / 16, blocks=(1, 1, 1))
    sex.train()
    with torch.no_grad():  # non-trivial BN statistics in the base model
        sex(torch.rand(2, 2, 40, 40, 40))
    ad = ADClassifier.from_base(sex)
    s_sd, a_sd = sex.stem.state_dict(), ad.stem.state_dict()
    assert s_sd.keys() == a_sd.keys()
    for k in s_sd:
        torch.testing.assert_close(a_sd[k], s_sd[k], rtol=0, atol=0)
    assert a_sd["conv1.bn.running_mean"].abs().sum() > 0
    # a copy, not shared storage: training the AD model leaves the base untouched
    assert ad.stem.conv1.conv.weight.data_ptr() != sex.stem.conv1.conv.weight.data_ptr()
    frozen = [n for n, p in ad.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith("bn.weight") for n in frozen)  # only the (absent in Keras) BN gammas


def test_small_models_run_on_synthetic_grid():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 48, 60, 43)
    sex = build_sex_model(width_mult=1 / 16, blocks=(1, 1, 1))
    ad = build_ad_model(sex, ad_head_prepool=False)
    assert sex(x).shape == (2, 1) and ad(x).shape == (2, 1)


def test_build_sex_model_bad_arguments():
    with pytest.raises(ValueError, match="'width_mult' should be"):
        build_sex_model(width_mult=0)
    with pytest.raises(ValueError, match="'blocks' should be"):
        build_sex_model(blocks=(1, 1, 0))
    with pytest.raises(TypeError, match="'base' should be an InceptionResNetV2"):
        ADClassifier.from_base(torch.nn.Linear(2, 2))
