"""An unknown spec key names the key it most likely meant."""

from __future__ import annotations

import pytest

from tests.conftest import write
from tests.support.clihelp import run_cli
from tuneforge.errors import ConfigError
from tuneforge.spec import parse_spec


@pytest.mark.parametrize(
    "section, key, meant",
    [
        ("train", "lr", "train.learning_rate"),  # initials
        ("train", "bs", "train.batch_size"),
        ("train", "learning_rte", "train.learning_rate"),  # spelling
        ("train", "epoch", "train.epochs"),  # contained
        ("lora", "rank", "lora.r"),
        (None, "modle", "model"),
    ],
)
def test_unknown_key_suggests_the_closest(section, key, meant):
    data = {"model": "m", "data": {"train": [{"path": "x.json"}]}}
    if section:
        data.setdefault(section, {})[key] = 1
    else:
        data[key] = 1
    with pytest.raises(ConfigError) as err:
        parse_spec(data)
    where = f"{section}.{key}" if section else key
    assert f"{where}: unknown key; did you mean {meant}?" in str(err.value)


def test_unknown_key_in_a_list_item_and_without_a_match():
    data = {"model": "m", "data": {"train": [{"path": "x.json", "fromat": "alpaca"}]}, "train": {"zzz": 1}}
    with pytest.raises(ConfigError) as err:
        parse_spec(data)
    text = str(err.value)
    assert "data.train.0.fromat: unknown key; did you mean data.train.0.format?" in text
    assert "train.zzz: unknown key; see `tuneforge train --print-defaults`" in text


def test_cli_set_with_an_unknown_key(capsys, tmp_path):
    spec = write(tmp_path / "s.yaml", "model: m\ndata:\n  train: x.json\n")
    code, _, err = run_cli(capsys, "train", spec, "--set", "train.lr=1e-4")
    assert code == 2 and "train.lr: unknown key; did you mean train.learning_rate?" in err
