import pytest

from quantbench.engine import configure as config
from quantbench.core.errors import ConfigError
from quantbench.techniques.schemes import SCHEMES
from quantbench.engine.plan import scheme_specs


def test_presets_resolve_with_their_values():
    article = config.resolve("article")
    assert (article.model.alpha, article.data.image_size, article.data.validation_split) == \
        (1.0, 224, 0.15)  # fmt: skip
    assert (article.train.learning_rate, article.train.epochs, article.train.batch_size) == \
        (1e-5, 10, 32)  # fmt: skip
    assert [t.text() for t in article.transforms] == ["qat:recipe=fresh"]
    default = config.resolve("default")
    assert (default.model.alpha, default.data.image_size, default.train.mode) == (0.35, 128, "full")
    assert config.resolve("smoke").data.max_images_per_class is not None
    assert [s.name for s in scheme_specs(default)] == list(SCHEMES.defaults())


def test_the_seed_preset_is_read_as_article(tmp_path):
    # `seed` is what the article's preset was called; flags, config files and the config.yaml
    # of a run directory from before the rename still say it.
    assert config.resolve("seed") == config.resolve("article")
    assert config.resolve("seed").name == "article"
    file = tmp_path / "c.yaml"
    file.write_text("preset: seed\n")
    assert config.resolve("article", file).preset == "article"
    import yaml

    stored = {**config.resolve("article").to_dict(), "name": "seed", "preset": "seed",
              "transforms": [{"name": "qat", "params": {"recipe": "seed"}}]}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    for asked in ({}, {"preset": "seed"}, {"preset": "article"}, {"qat.recipes": ["seed"]},
                  {"transforms": "qat:recipe=fresh"}):  # fmt: skip
        cfg = config.for_resume(tmp_path, asked)
        assert (cfg.preset, cfg.name) == ("article", "seed")
        assert [t.text() for t in cfg.transforms] == ["qat:recipe=fresh"]
    with pytest.raises(ConfigError) as info:
        config.for_resume(tmp_path, {"preset": "smoke"})
    assert "preset='article'" in info.value.message


def test_overrides_win_over_file_and_preset(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('name = "mine"\n[train]\nepochs = 3\nlearning_rate = 0.001\n')
    cfg = config.resolve("default", toml, {"train.epochs": 7})
    assert (cfg.name, cfg.train.epochs, cfg.train.learning_rate) == ("mine", 7, 0.001)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("convert:\n  schemes: [int8, float16]\n")
    assert [s.name for s in scheme_specs(config.resolve("default", yaml_file))] == ["int8", "float16"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train.epoks": 3}, "unknown config key 'train.epoks' (did you mean 'epochs'?)"),
        ({"trian.epochs": 3}, "unknown config key 'trian' (did you mean 'train'?)"),
        ({"train.epochs": -1}, "bad value for 'train.epochs': -1"),
        ({"data.validation_split": 1.5}, "bad value for 'data.validation_split'"),
        ({"convert.schemes": ["int9"]}, "unknown scheme 'int9' (did you mean 'int8'?)"),
        ({"evaluate.threads": [0]}, "bad value for 'evaluate.threads'"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, expected):
    with pytest.raises(ConfigError) as info:
        config.resolve("default", overrides=overrides)
    assert info.value.message.startswith(expected)
    assert "\n" not in info.value.message


def test_unknown_preset_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        config.resolve("smoek")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        config.resolve("default", bad)
    with pytest.raises(ConfigError, match="must end in"):
        config.resolve("default", tmp_path / "c.json") if (tmp_path / "c.json").write_text("{}") else None


def test_set_assignment_parses_yaml_values():
    assert config.parse_assignment("train.epochs=3") == ("train.epochs", 3)
    assert config.parse_assignment("evaluate.threads=[1, 2]") == ("evaluate.threads", [1, 2])
    with pytest.raises(ConfigError):
        config.parse_assignment("train.epochs")


def test_training_seeds_follow_repeats_or_explicit_seeds():
    assert config.resolve("default", overrides={"repeats": 3}).training_seeds() == [1, 2, 3]
    assert config.resolve("default", overrides={"seeds": [7, 9]}).training_seeds() == [7, 9]


def test_atomic_writes_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path):
    import os

    from quantbench.core import atomic

    previous = os.umask(0o022)
    try:
        path = atomic.write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
