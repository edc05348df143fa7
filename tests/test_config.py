from pathlib import Path

import pytest

from emotion_pipeline import config
from emotion_pipeline.config import AnalyzeConfig
from emotion_pipeline.errors import ConfigError
from emotion_pipeline.train import load_config
from emotion_pipeline.train.fusion import FusionConfig
from emotion_pipeline.train.loop import RunConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    if path.name.startswith("analyze"):
        assert isinstance(config.load(AnalyzeConfig, path), AnalyzeConfig)
    else:   # a training config names its trainer
        module, cfg = load_config(None, path)
        assert isinstance(cfg, RunConfig) and module.__name__.endswith("." + cfg.task)


def test_overrides_are_typed_and_nested():
    cfg = config.load(FusionConfig, None, ["epochs=3", "head.hidden=8", "seed=7", "data.audio_val_groups=a,b"])
    assert cfg.epochs == 3 and cfg.head.hidden == 8 and cfg.seed == 7
    assert cfg.data.audio_val_groups == ("a", "b")


@pytest.mark.parametrize("override, message", [
    (["nope=1"], "unknown key"),
    (["optim.nope=1"], "unknown key"),
    (["seed=abc"], "expected an integer"),
    (["frames_per_second=-1"], "frames_per_second"),
    (["fusion=magic"], "fusion must be"),
    (["novalue"], "expected key=value"),
])
def test_bad_overrides_fail_loudly(override, message):
    cls = AnalyzeConfig if "frames" in override[0] or "fusion=" in override[0] else FusionConfig
    with pytest.raises(ConfigError, match=message):
        config.load(cls, None, override)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("frames_per_second: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(AnalyzeConfig, bad)
    with pytest.raises(ConfigError, match="not found"):
        config.load(AnalyzeConfig, tmp_path / "missing.yaml")
