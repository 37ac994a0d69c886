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
    with pytest.raises(ConfigError, match="'epochs' should be an integer"):
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
