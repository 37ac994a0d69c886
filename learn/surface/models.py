"""2D CNNs for flat-map images: torchvision ResNet / DenseNet with ImageNet weights loaded OFFLINE, a tiny CNN.

Weights are never downloaded at run time. ``weights="imagenet"`` looks for the file torchvision would download
(``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``, e.g. ``resnet50-0676ba61.pth``) and only
then calls the torchvision weights API (which then reads that file); ``weights="/path/to/file.pth"`` loads a
state dict you provide. When the file is absent, :class:`WeightsNotFoundError` says where to put it and how to
fetch it on a machine with network access.

The head is replaced for the task (``num_outputs=1``: one logit for binary cross-entropy). A grey input
(``in_channels=1``) gets a first convolution whose kernel is the sum of the pretrained R, G and B kernels, which is
exactly the 3-channel network applied to the grey image replicated to RGB (see :mod:`learn.surface.dataset`).

>>> model = build_model("resnet18", weights=None, in_channels=1)   # from scratch
>>> model = build_model("resnet50", weights="imagenet")              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from learn import ConfigError
from surfmap.exceptions import InputFileNotFoundError

if TYPE_CHECKING:
    from .config import ModelConfig

__all__ = [
    "MODEL_NAMES",
    "TinyCNN",
    "WeightsNotFoundError",
    "build_model",
    "classifier_head",
    "first_conv",
    "imagenet_weights_path",
    "load_state_dict_file",
    "model_from_state",
]

log = logging.getLogger(__name__)

# name -> (torchvision builder, weights enum name)
_TORCHVISION = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet34": ("resnet34", "ResNet34_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "densenet121": ("densenet121", "DenseNet121_Weights"),
}
MODEL_NAMES = tuple(_TORCHVISION) + ("tiny",)


class WeightsNotFoundError(InputFileNotFoundError):
    """Pretrained weights are not on this machine (and are never downloaded at run time)."""


class TinyCNN(nn.Module):
    """A small CNN for CPU tests and demos: ``depth`` blocks of conv3x3-BN-ReLU-maxpool, global average pooling,
    a linear head. Layer names ``conv1`` / ``fc`` follow ResNet's so transfer code treats both alike."""

    def __init__(self, in_channels: int = 1, num_outputs: int = 1, width: int = 16, depth: int = 3):
        super().__init__()
        layers = []
        c = in_channels
        for i in range(depth):
            w = width * (2**i)
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_outputs)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _weights_enum(name: str):
    import torchvision.models as tvm

    return getattr(tvm, _TORCHVISION[name][1]).IMAGENET1K_V1


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name`` (``torch.hub.get_dir()/checkpoints/...``)."""
    if name not in _TORCHVISION:
        raise ConfigError(f"'name' should be one of {list(_TORCHVISION)} for ImageNet weights; {name!r} was provided")
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _missing_weights_message(name: str, path: Path) -> str:
    url = _weights_enum(name).url
    return (
        f"ImageNet weights for {name!r} are not on this machine: expected {str(path)!r} (torch hub cache; set "
        f"TORCH_HOME to move it). Weights are never downloaded at run time. On a machine with network access run "
        f"`python -c \"import torchvision; torchvision.models.{_TORCHVISION[name][0]}(weights='IMAGENET1K_V1')\"` "
        f"or download {url}, then copy the file to {str(path)!r}, or pass weights='/path/to/{path.name}'; "
        "use weights=None to train from scratch"
    )


def _fix_densenet_keys(state: dict) -> dict:
    """Old torchvision DenseNet files name layers ``norm.1``; the model expects ``norm1`` (as torchvision does)."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for k, v in state.items():
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def load_state_dict_file(path) -> dict:
    """Read a state dict from a ``.pth`` / ``.pt`` file (a bare state dict, or a checkpoint with ``"model"``).

    Read with ``torch.load(weights_only=True)`` only: a file that needs more (pickled Python objects,
    which could run code) is refused with a :class:`ConfigError` that says how to convert a file you trust.
    """
    from learn.checkpoint import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist; check the path")
    state = safe_torch_load(path, "weights file", ConfigError)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def first_conv(model: nn.Module) -> tuple[nn.Module, str]:
    """The first convolution of a supported model and its attribute path."""
    if hasattr(model, "conv1") and isinstance(model.conv1, nn.Conv2d):
        return model.conv1, "conv1"
    if hasattr(model, "features") and hasattr(model.features, "conv0"):
        return model.features.conv0, "features.conv0"
    if isinstance(model, TinyCNN):
        return model.features[0], "features.0"
    raise ConfigError(f"cannot find the first convolution of {type(model).__name__}")


def classifier_head(model: nn.Module) -> tuple[nn.Linear, str]:
    """The final linear layer of a supported model and its attribute name (``fc`` or ``classifier``)."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return model.fc, "fc"
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        return model.classifier, "classifier"
    raise ConfigError(f"cannot find the classifier head of {type(model).__name__}")


def _set_first_conv(model: nn.Module, in_channels: int) -> None:
    conv, where = first_conv(model)
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        # sum of the RGB kernels = the 3-channel network on the grey image replicated to RGB; for C channels
        # each gets sum/C so a constant input gives the same response
        w = conv.weight.sum(dim=1, keepdim=True) / in_channels
        new.weight.copy_(w.expand(-1, in_channels, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent = model
    parts = where.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], new)


def _replace_head(model: nn.Module, num_outputs: int) -> None:
    head, attr = classifier_head(model)
    if head.out_features != num_outputs:
        setattr(model, attr, nn.Linear(head.in_features, num_outputs))


def build_model(name: str = "resnet50", *, weights="imagenet", in_channels: int = 1, num_outputs: int = 1,
                tiny_width: int = 16, tiny_depth: int = 3) -> nn.Module:
    """A CNN for flat-map images with its head replaced for the task.

    Parameters
    ----------
    name : {"resnet18", "resnet34", "resnet50", "densenet121", "tiny"}
        Seed 001 uses resnet50 and densenet121; resnet18 and tiny are for CPU work.
    weights : "imagenet", path, or None
        ``"imagenet"``: torchvision's IMAGENET1K_V1 weights from the torch hub cache (never downloaded);
        a path: a state dict file (the backbone of ``name``; a checkpoint's ``"model"`` entry also works;
        a head or first convolution of a different shape is re-initialised); None: random initialisation.
    in_channels : int
        Image channels (1 for one metric of one hemisphere, as in the seed).
    num_outputs : int
        1 for a binary task (one logit, BCE-with-logits).

    Raises
    ------
    WeightsNotFoundError
        The weights file is absent; the message says where to put it.
    ConfigError
        Unknown model name or weights option.
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"model 'name' should be one of {list(MODEL_NAMES)}; {name!r} was provided")
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise ConfigError(f"'in_channels' should be a positive integer; {in_channels!r} was provided")
    if name == "tiny":
        model = TinyCNN(in_channels, num_outputs, tiny_width, tiny_depth)
        if weights == "imagenet":
            raise ConfigError("the 'tiny' model has no ImageNet weights; use weights=None or a file path")
        if weights is not None:
            _load_partial(model, _adapt_first_conv(model, load_state_dict_file(weights)), str(weights))
        return model
    import torchvision.models as tvm

    builder = getattr(tvm, _TORCHVISION[name][0])
    if weights is None:
        model = builder(weights=None)
    elif weights == "imagenet":
        path = imagenet_weights_path(name)
        if not path.is_file():
            raise WeightsNotFoundError(_missing_weights_message(name, path))
        model = builder(weights=_weights_enum(name), progress=False)  # reads the cached file, no download
        log.info("loaded ImageNet weights for %s from %s", name, path)
    elif isinstance(weights, (str, Path)):
        model = builder(weights=None)
        _set_first_conv(model, in_channels)
        _replace_head(model, num_outputs)
        state = load_state_dict_file(weights)
        if name.startswith("densenet"):
            state = _fix_densenet_keys(state)
        _load_partial(model, _adapt_first_conv(model, state), str(weights))
        log.info("loaded weights for %s from %s", name, weights)
        return model
    else:
        raise ConfigError(f"'weights' should be 'imagenet', a file path or None; {weights!r} was provided")
    _set_first_conv(model, in_channels)
    _replace_head(model, num_outputs)
    return model


def _adapt_first_conv(model: nn.Module, state: dict) -> dict:
    """An RGB first-conv kernel in ``state`` summed to the model's channel count (grey replicated to RGB)."""
    conv, where = first_conv(model)
    key = where + ".weight"
    w = state.get(key)
    if w is not None and w.ndim == 4 and w.shape[1] == 3 and conv.in_channels != 3:
        state = dict(state)
        c = conv.in_channels
        state[key] = (w.sum(dim=1, keepdim=True) / c).expand(-1, c, -1, -1).clone()
    return state


def _load_partial(model: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into ``model``; tensors whose shape differs (head, first conv) are left to the caller."""
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if len(unknown) > len(own) // 2 or len(missing) > len(own) // 2:
        raise ConfigError(
            f"weights in {source!r} do not fit {type(model).__name__}: {len(missing)} of its {len(own)} tensors "
            f"are absent from the file and {len(unknown)} file tensors are unknown (e.g. {unknown[:3]}); "
            "is it the right architecture?"
        )
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k in state if k in own and own[k].shape != state[k].shape]
    if skipped:
        log.info("weights from %s: %d tensor(s) of another shape left as initialised: %s", source, len(skipped),
                 skipped[:4])
    model.load_state_dict(fitting, strict=False)


def model_from_state(state: dict, model_cfg: ModelConfig, in_channels: int, *, reset_head: bool = True,
                     seed: int = 0) -> nn.Module:
    """A network of ``model_cfg.name`` holding ``state`` (a source model's weights), tensor for tensor.

    Parameters
    ----------
    state : dict
        ``state_dict`` of a model built with the same name and ``in_channels``.
    reset_head : bool
        Re-initialise the final linear layer (seeded) after loading.

    Raises
    ------
    ConfigError
        The state does not fit the architecture (names or shapes differ).
    """
    torch.manual_seed(seed)
    model = build_model(model_cfg.name, weights=None, in_channels=in_channels, num_outputs=1,
                        tiny_width=model_cfg.tiny_width, tiny_depth=model_cfg.tiny_depth)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"source weights do not fit a {model_cfg.name!r} network with {in_channels} input channel(s): {exc}"
        ) from None
    if reset_head:
        head, _ = classifier_head(model)
        head.reset_parameters()
    return model
