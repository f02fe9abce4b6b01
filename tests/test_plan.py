"""Technique registries, variant specs and the plan: identity is data, names derive from it."""

from __future__ import annotations

import json
import typing

import pytest

from quantbench.core import results as results_mod
from quantbench.core.config import CONFIG_SCHEMA_VERSION, RunConfig
from quantbench.engine import configure as config
from quantbench.core.errors import ConfigError
from quantbench.engine.plan import ModelSpec, VariantSpec, models_of, plan
from quantbench.techniques.schemes import SCHEMES
from quantbench.techniques.transforms import TRANSFORMS

REGISTRIES = [SCHEMES, TRANSFORMS]
ENTRIES = [(r, e.name) for r in REGISTRIES for e in r]


@pytest.mark.parametrize(("registry", "name"), ENTRIES, ids=[n for _, n in ENTRIES])
def test_every_entry_parses_round_trips_and_lists_its_parameters(registry, name):
    entry = registry.get(name)
    spec = registry.parse(name)
    assert spec.name == name
    # Defaults are filled in: the bare name and its spelled-out form are one identity.
    assert registry.parse(spec.text()) == spec
    assert registry.coerce(spec.model_dump()) == spec
    assert set(spec.params) == set(entry.params.model_fields)
    assert entry.description
    for key, info in entry.params.model_fields.items():
        assert key in entry.param_help()
        if typing.get_origin(info.annotation) is typing.Literal:  # the choices, not "Literal"
            assert "|".join(typing.get_args(info.annotation)) in entry.param_help()


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.kind)
def test_unknown_names_and_parameters_get_a_did_you_mean(registry):
    name = registry.names()[0]
    with pytest.raises(ConfigError) as info:
        registry.parse(name[:-1] + "x" if len(name) > 3 else name + "x")
    assert "did you mean" in info.value.message and registry.flag in info.value.tip
    with pytest.raises(ConfigError) as info:
        registry.parse(f"{name}:no_such_parameter=1")
    assert "no_such_parameter" in info.value.message


def test_parameters_are_typed_and_validated():
    spec = TRANSFORMS.parse("qat:recipe=finetune:epochs=3:learning_rate=1e-5")
    assert spec.params == {"recipe": "finetune", "epochs": 3, "learning_rate": 1e-5}
    with pytest.raises(ConfigError) as info:
        TRANSFORMS.parse("qat:recipe=nonsense")
    assert "qat:recipe" in info.value.message
    with pytest.raises(ConfigError):
        TRANSFORMS.parse("qat:epochs")  # no '='


def test_variant_ids_are_stable_and_names_derive_from_the_spec():
    qat = TRANSFORMS.spec("qat")
    spec = VariantSpec(transforms=(qat,), scheme=SCHEMES.spec("int8"))
    assert spec.name == "qat_finetune_int8" and spec.source == "qat_finetune"
    assert VariantSpec(scheme=SCHEMES.spec("int8")).name == "int8"
    assert VariantSpec().name == "keras_float"
    assert VariantSpec(transforms=(qat,)).name == "keras_qat_finetune"
    # The id is a hash of the spec: equal specs, equal ids; any change, another id.
    again = VariantSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again.id == spec.id and len(spec.id) == 16
    assert VariantSpec(transforms=(qat,), scheme=SCHEMES.spec("int8"), repeat=1).id != spec.id
    other = VariantSpec(transforms=(TRANSFORMS.spec("qat", epochs=3),), scheme=SCHEMES.spec("int8"))
    assert other.id != spec.id and other.name == spec.name
    # Pinned: the same spec hashes the same in every version (ids name cached products).
    assert VariantSpec(scheme=SCHEMES.spec("float32")).id == "26c6070b19f97760"


def test_selective_variants_of_different_bases_and_budgets_get_their_own_names():
    cfg = config.resolve("smoke", None, {"convert.schemes": [
        "selective", "selective:base=int8", "selective:budget=2"]})
    names = [s.name for s in plan(cfg)]
    assert names[1:4] == ["selective", "selective_int8", "selective_within2"]
    # The search's size is not part of the name: that plan would name two variants alike.
    with pytest.raises(ConfigError, match="'selective'"):
        plan(config.resolve("smoke", None, {"convert.schemes": ["selective", "selective:search_images=500"]}))


def test_plan_of_the_default_preset():
    cfg = config.resolve("default")
    specs = plan(cfg)
    names = [s.name for s in specs]
    assert names[:7] == ["keras_float", "float32", "dynamic_range", "float16", "int8", "int8_io",
                         "int16x8"]  # fmt: skip
    assert names[7] == "keras_qat_finetune"
    assert "qat_finetune_optimize_for_size" in names
    assert len({s.id for s in specs}) == len(specs)
    models = models_of(specs)
    assert models == [ModelSpec(), ModelSpec(transforms=(TRANSFORMS.spec("qat"),))]
    assert [s.repeat for s in plan(config.resolve("default", overrides={"repeats": 2}))].count(1) == len(specs)


def test_legacy_qat_section_and_flags_become_transforms(tmp_path):
    by_flag = config.resolve("default", overrides={"qat.recipes": ["fresh"], "qat.epochs": 3})
    assert by_flag.transforms == [TRANSFORMS.spec("qat", recipe="fresh", epochs=3)]
    by_text = config.resolve("default", overrides={"transforms": "qat:recipe=fresh:epochs=3"})
    assert by_text.transforms == by_flag.transforms
    assert config.resolve("default", overrides={"transforms": ""}).transforms == []
    # A version-1 config file (a `qat` section) still reads, as the same config; `seed` is
    # what the `fresh` recipe was called then.
    old = tmp_path / "old.yaml"
    old.write_text("schema_version: 1\nqat: {recipes: [seed], epochs: 3, schemes: [int8]}\n")
    cfg = config.resolve("default", old)
    assert cfg.transforms == by_flag.transforms
    assert [s.name for s in cfg.convert.transform_schemes] == ["int8"]
    assert cfg.schema_version == CONFIG_SCHEMA_VERSION
    # Its dump reads back as itself.
    assert RunConfig.model_validate(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as info:
        config.resolve("default", overrides={"qat.recipe": ["seed"]})
    assert "did you mean 'recipes'" in info.value.message


def test_recipe_seed_reads_as_fresh_with_the_same_ids_and_names(tmp_path):
    # `seed` is what the `fresh` recipe was called: flags, text and config files that say it
    # give the very spec `fresh` gives, so its variants have one id (and one cache key).
    fresh = TRANSFORMS.parse("qat:recipe=fresh")
    assert TRANSFORMS.parse("qat:recipe=seed") == fresh and fresh.params["recipe"] == "fresh"
    assert TRANSFORMS.coerce({"name": "qat", "params": {"recipe": "seed"}}) == fresh
    file = tmp_path / "c.yaml"
    file.write_text("transforms: [{name: qat, params: {recipe: seed}}]\n")
    by_flag = plan(config.resolve("default", overrides={"qat.recipes": ["seed"]}))
    by_file = plan(config.resolve("default", file))
    by_new = plan(config.resolve("default", overrides={"transforms": "qat:recipe=fresh"}))
    assert [s.id for s in by_flag] == [s.id for s in by_file] == [s.id for s in by_new]
    assert "qat_fresh_int8" in [s.name for s in by_new]
    with pytest.raises(ConfigError) as info:
        TRANSFORMS.parse("qat:recipe=fersh")
    assert "'fresh'" in info.value.message


def test_a_run_measured_with_recipe_seed_resumes_onto_todays_ids(tmp_path):
    """A version-2 results file from before the rename: its QAT rows say recipe `seed`, their
    ids and recorded models hash that. Reopened, they take the ids the plan has now and keep
    the names they were measured under."""
    from quantbench.core.results import RunResults, VariantResult
    from quantbench.engine.rundir import reopen
    from quantbench.techniques import TechniqueSpec

    old_qat = TechniqueSpec(name="qat", params={"recipe": "seed", "epochs": None,
                                                "learning_rate": None})  # fmt: skip
    old = VariantSpec(transforms=(old_qat,), scheme=SCHEMES.spec("int8"))
    row = VariantResult(id=old.id, spec=old, variant="qat_seed_int8", source="qat_seed",
                        scheme="int8", policy="p")
    results = RunResults(name="t", created="now", models={old.model.id: "model-key"}, variants=[row])
    results_mod.save(results, tmp_path)
    reopened = reopen(tmp_path)
    now = next(s for s in plan(config.resolve("default", overrides={"qat.recipes": ["fresh"]}))
               if s.name == "qat_fresh_int8")  # fmt: skip
    row = reopened.variants[0]
    assert (row.id, row.spec, row.variant) == (now.id, now, "qat_seed_int8")
    assert reopened.models == {now.model.id: "model-key"}
    assert results_mod.load(tmp_path).variants[0].id == now.id  # saved so


def test_version_1_results_read_and_get_specs_to_resume(tmp_path):
    """Views read a version-1 file as it is; a resume gives each row its spec (the registries
    resolve the parameters, so it happens in the engine: rundir.specify_v1_rows)."""
    from quantbench.engine.rundir import specify_v1_rows
    from tests.fixtures_results import make_results

    raw = json.loads(make_results().model_dump_json())
    raw["schema_version"] = 1
    for row in raw["variants"]:
        row.pop("spec"), row.pop("id"), row.pop("reused")
    (tmp_path / "results.json").write_text(json.dumps(raw))
    loaded = results_mod.load(tmp_path)
    assert loaded.schema_version == results_mod.RESULTS_SCHEMA_VERSION
    assert all(row.spec is None for row in loaded.variants)
    specify_v1_rows(loaded)
    for row in loaded.variants:
        assert row.spec is not None and row.spec.name == row.variant, row.variant
        assert row.id == row.spec.id


def test_results_files_that_are_not_results_are_one_clear_error(tmp_path):
    from quantbench.core.errors import QuantbenchError

    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(QuantbenchError) as info:
        results_mod.load(tmp_path)
    assert "JSON list" in info.value.message
    (tmp_path / "results.json").write_text('{"schema_version": 2, "name": "x", "created": "now", '
                                           '"variants": 3}')  # fmt: skip
    with pytest.raises(QuantbenchError) as info:
        results_mod.load(tmp_path)
    assert "variants" in info.value.message and "\n" not in info.value.message


def test_named_schemes_reach_every_model_of_the_plan():
    """`--schemes float32,int8 --transforms prune,cluster` converts the transformed models with
    float32 and int8 too (it converted them with all eight, the deprecated aliases included);
    with no scheme named they get the article's QAT table; transform_schemes still wins."""
    named = plan(config.resolve("smoke", overrides={"convert.schemes": ["float32", "int8"],
                                                    "transforms": "prune,cluster"}))  # fmt: skip
    by_model = {}
    for spec in named:
        by_model.setdefault(spec.source, []).append(spec.scheme.name if spec.scheme else None)
    assert set(by_model) == {"float", "prune50", "cluster16"}, by_model
    assert all(schemes == [None, "float32", "int8"] for schemes in by_model.values()), by_model
    unnamed = plan(config.resolve("default"))
    qat = [s.scheme.name for s in unnamed if s.transforms and s.scheme]
    assert "optimize_for_size" in qat and "optimize_for_size" not in [
        s.scheme.name for s in unnamed if not s.transforms and s.scheme]
    chosen = plan(config.resolve("smoke", overrides={"convert.schemes": ["float32", "int8"],
                                                     "convert.transform_schemes": ["int8"],
                                                     "transforms": "prune"}))  # fmt: skip
    assert [s.scheme.name for s in chosen if s.transforms and s.scheme] == ["int8"]

