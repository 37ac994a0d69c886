"""3D Inception-ResNet-V2 of seed 000 (BrainImageNet) and the AD classifier built from its stem.

Architecture as released (VOLUMETRIC.md §1-2): input (N, 2, 96, 120, 86) with channel 0 = GMD (``wc1``) and
channel 1 = GMV (``mwc1``); kernel axes kept in the released order, so a (1, 7, 1) kernel runs along array axis 1.

- :class:`ConvBN`: Conv3d without bias -> BatchNorm3d(eps=1e-3, momentum=0.01) with gamma frozen at 1 (Keras
  ``scale=False``) -> ReLU. Padding "same" at stride 1 is symmetric; "same" at stride 2 is TensorFlow-style
  (odd voxel at the end); "valid" is no padding.
- :class:`InceptionResNetV2` (the sex base model; also the age variant ``head="age"``): stem (512 channels) ->
  5x Block A (scale 0.17) -> Reduction-A (1280) -> 10x Block B (0.1) -> Reduction-B (2272) -> 4x Block C (0.2)
  + 1x Block C (1.0, no ReLU) -> ``conv_7b`` (1536) -> global average pool -> Dropout(0.5) -> Linear(1).
  54,012,539 trainable parameters at full size with gamma frozen.
- :class:`ADClassifier`: the sex model's stem plus the simplified head ``ad_head`` (MaxPool -> ConvBN 256 valid ->
  ConvBN 256 stride 2 same -> concat[MaxPool, ConvBN 256 stride 2 valid] -> GAP -> Dropout(0.5) -> Linear(1)).
  10,162,017 trainable parameters at full size.

All models return logits of shape (N, 1); apply a sigmoid for probabilities. Module names are stable
(``stem.*``, ``repeat_a``, ``mixed_6a``, ``repeat_b``, ``mixed_7a``, ``repeat_c``, ``conv_7b``, ``ad_head.conv2``,
...) so stem weights copy by prefix and Grad-CAM can address layers by name.

Small test models: ``width_mult`` scales every filter count (rounded, minimum 2) and ``blocks=(nA, nB, nC)`` sets
the block repeats (``nC`` counts the final no-ReLU block). **Deviation (small inputs only):**
``ad_head_prepool=False`` skips the head's first max-pool so the AD head fits inputs under 69 voxels per axis (the
3 mm synthetic grid, 48x60x43); the config's default ``"auto"`` (:func:`learn.volumetric.train.check_model_input`)
chooses it only there, so the seed's 96x120x86 input keeps the released head.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FULL_INPUT_SHAPE",
    "ADClassifier",
    "ConvBN",
    "InceptionResNetV2",
    "InceptionStem",
    "build_ad_model",
    "build_age_model",
    "build_sex_model",
    "count_parameters",
    "set_bn_momentum",
    "tf_same_pads",
]

FULL_INPUT_SHAPE = (2, 96, 120, 86)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) along one axis: the odd voxel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _triple(k):
    return (k, k, k) if isinstance(k, int) else tuple(k)


class ConvBN(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d (beta only, gamma frozen at 1 unless ``bn_gamma``) -> ReLU.

    Parameters
    ----------
    in_ch, out_ch : int
    kernel : int or (3,) ints
    stride : int
    padding : {"same", "valid"}
    activation : bool
        ReLU after the BN.
    bn_gamma : bool
        Train BN gamma (a small deviation from the released Keras model, which has none).
    bn_momentum : float or None
        PyTorch BN momentum (0.01 = Keras 0.99). None = cumulative average, for very short (test) runs where
        0.01 leaves the running statistics near their initial values.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel=3, stride: int = 1, padding: str = "same",
                 activation: bool = True, bn_gamma: bool = False, bn_momentum: float | None = BN_MOMENTUM):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"'padding' should be 'same' or 'valid'; {padding!r} was provided")
        self.kernel = _triple(kernel)
        self.stride = int(stride)
        self.tf_same = padding == "same" and self.stride > 1
        if padding == "valid" or self.tf_same:
            pad = 0
        else:
            if any(k % 2 == 0 for k in self.kernel):
                raise ValueError(f"'same' padding at stride 1 needs odd kernels; {self.kernel} was provided")
            pad = tuple(k // 2 for k in self.kernel)
        self.conv = nn.Conv3d(in_ch, out_ch, self.kernel, stride=self.stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm3d(out_ch, eps=BN_EPS, momentum=bn_momentum)
        self.bn.weight.requires_grad_(bn_gamma)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            pads = []
            for size, k in zip(reversed(x.shape[2:]), reversed(self.kernel)):
                pads.extend(tf_same_pads(int(size), k, self.stride))
            x = F.pad(x, pads)
        x = self.bn(self.conv(x))
        return F.relu(x) if self.activation else x


class _Concat(nn.Module):
    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


class InceptionStem(nn.Module):
    """Inception-v4-style 3D stem: 2 -> 512 channels (96x120x86 -> 21x27x19 at full size)."""

    def __init__(self, in_channels: int = 2, w=lambda c: c, bn_gamma: bool = False):
        super().__init__()
        g = bn_gamma
        self.conv1 = ConvBN(in_channels, w(64), 3, padding="valid", bn_gamma=g)
        self.conv2 = ConvBN(w(64), w(96), 3, bn_gamma=g)
        self.pool1 = nn.MaxPool3d(3, 2)
        self.conv3 = ConvBN(w(96), w(96), 3, stride=2, padding="valid", bn_gamma=g)
        c = w(96) + w(96)
        self.branch4a = nn.Sequential(ConvBN(c, w(96), 1, bn_gamma=g),
                                      ConvBN(w(96), w(128), 3, padding="valid", bn_gamma=g))
        self.branch4b = nn.Sequential(
            ConvBN(c, w(96), 1, bn_gamma=g), ConvBN(w(96), w(96), (1, 7, 1), bn_gamma=g),
            ConvBN(w(96), w(96), (1, 1, 7), bn_gamma=g), ConvBN(w(96), w(96), (7, 1, 1), bn_gamma=g),
            ConvBN(w(96), w(128), 3, padding="valid", bn_gamma=g))
        c = 2 * w(128)
        self.conv5 = ConvBN(c, w(256), 3, stride=2, padding="valid", bn_gamma=g)
        self.pool2 = nn.MaxPool3d(3, 2)  # Keras name "StemEnd"
        self.out_channels = w(256) + c

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x = torch.cat([self.pool1(x), self.conv3(x)], dim=1)
        x = torch.cat([self.branch4a(x), self.branch4b(x)], dim=1)
        return torch.cat([self.conv5(x), self.pool2(x)], dim=1)


class _Residual(nn.Module):
    """x + scale * up(concat(branches(x))), then ReLU (unless ``activation`` is False)."""

    def __init__(self, channels: int, branches: list[nn.Module], mixed: int, scale: float, activation: bool = True):
        super().__init__()
        self.mixed = _Concat(*branches)
        self.up = nn.Conv3d(mixed, channels, 1, bias=True)  # biased, no BN (Keras use_bias=True)
        self.scale = float(scale)
        self.activation = activation

    def forward(self, x):
        x = x + self.scale * self.up(self.mixed(x))
        return F.relu(x) if self.activation else x


def _block_a(c, w, g, scale=0.17):
    b0 = ConvBN(c, w(32), 1, bn_gamma=g)
    b1 = nn.Sequential(ConvBN(c, w(32), 1, bn_gamma=g), ConvBN(w(32), w(32), 3, bn_gamma=g))
    b2 = nn.Sequential(ConvBN(c, w(32), 1, bn_gamma=g), ConvBN(w(32), w(48), 3, bn_gamma=g),
                       ConvBN(w(48), w(64), 3, bn_gamma=g))
    return _Residual(c, [b0, b1, b2], w(32) + w(32) + w(64), scale)


def _block_b(c, w, g, scale=0.1):
    b0 = ConvBN(c, w(192), 1, bn_gamma=g)
    b1 = nn.Sequential(ConvBN(c, w(128), 1, bn_gamma=g), ConvBN(w(128), w(148), (1, 7, 1), bn_gamma=g),
                       ConvBN(w(148), w(170), (1, 1, 7), bn_gamma=g), ConvBN(w(170), w(192), (7, 1, 1), bn_gamma=g))
    return _Residual(c, [b0, b1], w(192) + w(192), scale)


def _block_c(c, w, g, scale=0.2, activation=True):
    b0 = ConvBN(c, w(192), 1, bn_gamma=g)
    b1 = nn.Sequential(ConvBN(c, w(192), 1, bn_gamma=g), ConvBN(w(192), w(212), (1, 3, 1), bn_gamma=g),
                       ConvBN(w(212), w(234), (1, 1, 3), bn_gamma=g), ConvBN(w(234), w(256), (3, 1, 1), bn_gamma=g))
    return _Residual(c, [b0, b1], w(192) + w(256), scale, activation)


def _width_fn(width_mult: float):
    if not (isinstance(width_mult, (int, float)) and 0 < width_mult <= 4):
        raise ValueError(f"'width_mult' should be in (0, 4]; {width_mult!r} was provided")
    return lambda c: max(2, int(round(c * width_mult)))


def set_bn_momentum(module: nn.Module, momentum: float | None) -> nn.Module:
    """Set the momentum of every BatchNorm3d (0.01 = Keras default; None = cumulative average)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.momentum = momentum
    return module


def _init_keras(module: nn.Module) -> None:
    """Keras defaults: glorot_uniform weights, zero biases; BN beta 0, gamma 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class InceptionResNetV2(nn.Module):
    """3D Inception-ResNet-V2 of seed 000 (sex classifier, or the age regressor with ``head="age"``).

    Parameters
    ----------
    in_channels : int
        2 (GMD, GMV).
    width_mult : float
        Multiplier of every filter count (1.0 = released model; 1/8 for CPU tests).
    blocks : (3,) ints
        Repeats of blocks A, B, C (5, 10, 5 released; the last C block has scale 1 and no ReLU).
    head : {"sex", "age"}
        "sex": GAP -> Dropout(0.5) -> Linear(1) logit. "age" (paper's age base model; layer order unverified):
        GAP -> Linear(128) -> ELU -> Dropout(0.2) -> Linear(1) linear output.
    dropout : float, optional
        Overrides the head's dropout rate.
    bn_gamma : bool
        Train BN gamma (the released model has none; default False keeps it frozen at 1).
    """

    def __init__(self, in_channels: int = 2, width_mult: float = 1.0, blocks=(5, 10, 5), head: str = "sex",
                 dropout: float | None = None, bn_gamma: bool = False):
        super().__init__()
        w = _width_fn(width_mult)
        if len(blocks) != 3 or any((not isinstance(b, int)) or b < 0 for b in blocks) or blocks[2] < 1:
            raise ValueError(f"'blocks' should be 3 non-negative integers with nC >= 1; {blocks!r} was provided")
        if head not in ("sex", "age"):
            raise ValueError(f"'head' should be 'sex' or 'age'; {head!r} was provided")
        g = bn_gamma
        self.config = {"in_channels": in_channels, "width_mult": width_mult, "blocks": tuple(blocks),
                       "head": head, "bn_gamma": bn_gamma}
        self.stem = InceptionStem(in_channels, w, g)
        c = self.stem.out_channels
        self.repeat_a = nn.Sequential(*[_block_a(c, w, g) for _ in range(blocks[0])])
        self.mixed_6a = _Concat(
            ConvBN(c, w(384), 3, stride=2, padding="valid", bn_gamma=g),
            nn.Sequential(ConvBN(c, w(256), 1, bn_gamma=g), ConvBN(w(256), w(256), 3, bn_gamma=g),
                          ConvBN(w(256), w(384), 3, stride=2, padding="valid", bn_gamma=g)),
            nn.MaxPool3d(3, 2))
        c = 2 * w(384) + c
        self.repeat_b = nn.Sequential(*[_block_b(c, w, g) for _ in range(blocks[1])])
        self.mixed_7a = _Concat(
            nn.Sequential(ConvBN(c, w(256), 1, bn_gamma=g),
                          ConvBN(w(256), w(384), 3, stride=2, padding="valid", bn_gamma=g)),
            nn.Sequential(ConvBN(c, w(256), 1, bn_gamma=g),
                          ConvBN(w(256), w(288), 3, stride=2, padding="valid", bn_gamma=g)),
            nn.Sequential(ConvBN(c, w(256), 1, bn_gamma=g), ConvBN(w(256), w(288), 3, bn_gamma=g),
                          ConvBN(w(288), w(320), 3, stride=2, padding="valid", bn_gamma=g)),
            nn.MaxPool3d(3, 2))
        c = w(384) + w(288) + w(320) + c
        self.repeat_c = nn.Sequential(*[_block_c(c, w, g) for _ in range(blocks[2] - 1)],
                                      _block_c(c, w, g, scale=1.0, activation=False))
        self.conv_7b = ConvBN(c, w(1536), 1, bn_gamma=g)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        f = w(1536)
        if head == "sex":
            self.dropout = nn.Dropout(0.5 if dropout is None else dropout)
            self.fc = nn.Linear(f, 1)
        else:
            self.fc_age = nn.Linear(f, 128)
            self.dropout = nn.Dropout(0.2 if dropout is None else dropout)
            self.fc = nn.Linear(128, 1)
        self.head = head
        _init_keras(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of ``conv_7b`` (N, 1536, 4, 6, 4 at full size)."""
        x = self.stem(x)
        x = self.mixed_6a(self.repeat_a(x))
        x = self.mixed_7a(self.repeat_b(x))
        return self.conv_7b(self.repeat_c(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avg_pool(self.features(x)), 1)
        if self.head == "age":
            x = F.elu(self.fc_age(x))
        return self.fc(self.dropout(x))


class ADHead(nn.Module):
    """Simplified AD head on the 512-channel stem output (ADS L164-181)."""

    def __init__(self, in_ch: int, w, prepool: bool = True, bn_gamma: bool = False, dropout: float = 0.5):
        super().__init__()
        g = bn_gamma
        self.prepool = prepool
        self.mpool1 = nn.MaxPool3d(3, 2) if prepool else nn.Identity()
        self.conv1 = ConvBN(in_ch, w(256), 3, padding="valid", bn_gamma=g)
        self.conv2 = ConvBN(w(256), w(256), 3, stride=2, padding="same", bn_gamma=g)  # TF-style padding
        self.mpool2 = nn.MaxPool3d(3, 2)
        self.conv3 = ConvBN(w(256), w(256), 3, stride=2, padding="valid", bn_gamma=g)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * w(256), 1)

    def concat(self, x):
        x = self.conv2(self.conv1(self.mpool1(x)))
        return torch.cat([self.mpool2(x), self.conv3(x)], dim=1)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.avg_pool(self.concat(x)), 1)))


class ADClassifier(nn.Module):
    """Stem of a (trained) sex model + :class:`ADHead`; everything trains (as in the released script).

    Parameters
    ----------
    stem : InceptionStem
        Copied (deep copy) from the base model, so the base model is left untouched.
    width_mult : float
        Multiplier of the head's filter counts (use the base model's).
    ad_head_prepool : bool
        Keep the head's first max-pool (True, released). False is a test-only deviation for the 3 mm grid.
    """

    def __init__(self, stem: InceptionStem, width_mult: float = 1.0, ad_head_prepool: bool = True,
                 bn_gamma: bool = False, dropout: float = 0.5):
        super().__init__()
        w = _width_fn(width_mult)
        self.config = {"width_mult": width_mult, "ad_head_prepool": ad_head_prepool, "bn_gamma": bn_gamma}
        self.stem = copy.deepcopy(stem)
        self.ad_head = ADHead(self.stem.out_channels, w, ad_head_prepool, bn_gamma, dropout)
        _init_keras(self.ad_head)

    @classmethod
    def from_base(cls, base: InceptionResNetV2, ad_head_prepool: bool = True, dropout: float = 0.5) -> ADClassifier:
        """Transfer: new AD classifier whose stem equals ``base.stem`` (weights and BN statistics)."""
        if not isinstance(base, InceptionResNetV2):
            raise TypeError(f"'base' should be an InceptionResNetV2; {type(base).__name__} was provided")
        cfg = base.config
        return cls(base.stem, cfg["width_mult"], ad_head_prepool, cfg["bn_gamma"], dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ad_head(self.stem(x))


def build_sex_model(width_mult: float = 1.0, blocks=(5, 10, 5), **kwargs) -> InceptionResNetV2:
    """The sex (base) classifier; full size by default."""
    return InceptionResNetV2(width_mult=width_mult, blocks=tuple(blocks), head="sex", **kwargs)


def build_age_model(width_mult: float = 1.0, blocks=(5, 10, 5), **kwargs) -> InceptionResNetV2:
    """The paper's age base model (Dense 128 ELU, Dropout 0.2, linear output; train with MSE/L1)."""
    return InceptionResNetV2(width_mult=width_mult, blocks=tuple(blocks), head="age", **kwargs)


def build_ad_model(base: InceptionResNetV2 | None = None, *, width_mult: float = 1.0, blocks=(5, 10, 5),
                   ad_head_prepool: bool = True, **kwargs) -> ADClassifier:
    """AD classifier from ``base`` (a trained sex or age model); a fresh base is built when None."""
    if base is None:
        base = build_sex_model(width_mult, blocks, **kwargs)
    return ADClassifier.from_base(base, ad_head_prepool=ad_head_prepool)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
