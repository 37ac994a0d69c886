import dataclasses
import json

import pytest
import torch
from torch import nn

from learn import ConfigError
from learn.checkpoint import load_checkpoint, save_checkpoint
from learn.config import load_config, save_resolved
from surfmap.exceptions import FormatError, InputFileNotFoundError


@dataclasses.dataclass
class Optim:
    lr: float = 0.01
    decay: float = 3e-3


@dataclasses.dataclass
class Exp:
    name: str = "x"
    epochs: int = 10
    shape: tuple[int, int, int] = (96, 120, 86)
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_load_config_toml_defaults_and_nested(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('epochs = 2\nshape = [48, 60, 43]\n[optim]\nlr = 1\n')
    c = load_config(p, Exp, overrides=["optim.decay=0.002"])
    assert c.epochs == 2 and c.shape == (48, 60, 43) and c.optim.lr == 1.0 and c.optim.decay == 0.002
    assert c.name == "x"
    save_resolved(c, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["optim"] == {"lr": 1.0, "decay": 0.002}


def test_load_config_unknown_key(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['optim.learning_rate'\].*'decay', 'lr'"):
        load_config(p, Exp)


def test_load_config_wrong_type(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('epochs = "ten"\n')
    with pytest.raises(ConfigError, match="config key 'epochs': expected an integer; found"):
        load_config(p, Exp)


def test_load_config_missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="does not exist"):
        load_config(tmp_path / "none.toml", Exp)


def test_checkpoint_round_trip(tmp_path):
    m = nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", model=m, optimizer=opt, epoch=4, args=Exp(), note="hi")
    m2 = nn.Linear(3, 2)
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    ck = load_checkpoint(tmp_path / "c.pt", m2, opt2)
    torch.testing.assert_close(m2.weight, m.weight)
    assert ck["epoch"] == 4 and ck["note"] == "hi" and ck["args"]["shape"] == [96, 120, 86]
    assert opt2.state_dict()["state"][0]["momentum_buffer"].shape == (2, 3)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    save_checkpoint(tmp_path / "c.pt", model=nn.Linear(3, 2), epoch=0)
    with pytest.raises(FormatError, match="does not fit the model"):
        load_checkpoint(tmp_path / "c.pt", nn.Linear(4, 2))
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(FormatError, match="could not be read"):
        load_checkpoint(tmp_path / "bad.pt")


class _RunsCode:
    """Unpickling this calls os.system (what a hostile weights file does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _hostile_file(tmp_path, name):
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / name
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _RunsCode(marker)}, path)
    return path, marker


def test_load_checkpoint_refuses_code_and_runs_none(tmp_path):
    path, marker = _hostile_file(tmp_path, "evil.pt")
    with pytest.raises(FormatError, match=r"was not loaded: .*weights_only=True.*convert_trusted_checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()  # the pickled os.system never ran


def test_load_state_dict_file_refuses_code_and_runs_none(tmp_path):
    from learn.surface.models import load_state_dict_file

    path, marker = _hostile_file(tmp_path, "evil.pth")
    with pytest.raises(ConfigError, match=r"weights file .*evil.pth.* was not loaded: .*could run code"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_checkpoint_holds_only_plain_data(tmp_path):
    import numpy as np

    from learn.checkpoint import plain_state
    from learn.utils import rng_state, set_rng_state

    m = nn.Linear(3, 2)
    np.random.seed(3)
    save_checkpoint(tmp_path / "c.pt", model=m, epoch=1, args=Exp(), rng=rng_state(),
                    history={"auc": [np.float64(0.5)], "idx": np.arange(4)})
    expected = np.random.rand(3)
    ck = torch.load(tmp_path / "c.pt", weights_only=True)  # the file needs nothing beyond plain data
    assert ck["history"]["auc"] == [0.5] and ck["history"]["idx"].tolist() == [0, 1, 2, 3]
    set_rng_state(ck["rng"])  # the NumPy state, stored as a tensor, restores the stream exactly
    np.testing.assert_array_equal(np.random.rand(3), expected)
    with pytest.raises(TypeError, match=r"checkpoint.hook: a builtins.function cannot be stored"):
        plain_state({"hook": lambda x: x})


def test_convert_trusted_checkpoint(tmp_path):
    import numpy as np

    from learn.checkpoint import convert_trusted_checkpoint

    old = tmp_path / "old.pt"
    torch.save({"model": nn.Linear(3, 2).state_dict(), "epoch": 0, "rng": np.random.get_state()}, old)
    with pytest.raises(FormatError, match="was not loaded"):
        load_checkpoint(old)  # the NumPy RNG tuple of older checkpoints needs unpickling
    ck = load_checkpoint(convert_trusted_checkpoint(old, tmp_path / "new.pt"), nn.Linear(3, 2))
    assert ck["epoch"] == 0 and isinstance(ck["rng"][1], torch.Tensor)
