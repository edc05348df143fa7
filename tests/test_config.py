from pathlib import Path

import pytest

from emotion_pipeline import config
from emotion_pipeline.config import AnalyzeConfig
from emotion_pipeline.errors import ConfigError
from emotion_pipeline.train.fusion import FusionTrainConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    cls = FusionTrainConfig if path.name.startswith("fusion") else AnalyzeConfig
    cfg = config.load(cls, path)
    assert isinstance(cfg, cls)


def test_overrides_are_typed_and_nested():
    cfg = config.load(FusionTrainConfig, None, ["optim.epochs=3", "head.hidden=8", "seed=7", "data.audio_val_groups=a,b"])
    assert cfg.optim.epochs == 3 and cfg.head.hidden == 8 and cfg.seed == 7
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
    cls = AnalyzeConfig if "frames" in override[0] or "fusion=" in override[0] else FusionTrainConfig
    with pytest.raises(ConfigError, match=message):
        config.load(cls, None, override)


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("frames_per_second: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(AnalyzeConfig, bad)
    with pytest.raises(ConfigError, match="not found"):
        config.load(AnalyzeConfig, tmp_path / "missing.yaml")
