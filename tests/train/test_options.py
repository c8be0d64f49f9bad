"""Typed run options: one parse at the door, old flat keys migrated (one line each), validation
messages that name the key, and the resumable keys from field metadata."""

import dataclasses
import json

import pytest
from ml_collections import ConfigDict

from dlkit.errors import ConfigError
from dlkit.train import options as opts
from dlkit.train.config import default_config
from dlkit.train.options import (
    CheckpointOptions,
    ParallelOptions,
    RunOptions,
    TrainStepOptions,
    TransferOptions,
    config_differences,
    migrate,
    resumable_keys,
)
from dlkit.train.step import StepOptions


def flat_config():
    """An old-style config: every moved key set flat, away from its default."""
    c = default_config()
    c.batch_size = 32
    c.grad_accum_steps = 4
    c.mixed_precision = True
    c.steps_per_call = 3
    c.ensemble_size = 1
    c.init_from = "/runs/pre"
    c.init_skip = ("head/.*",)
    c.init_rename = ("enc/(.*)->body/\\1",)
    c.freeze = ("body/layer_0/.*",)
    c.backbone_lr_scale = 0.1
    c.init_vectors = "/runs/w2v"
    c.init_vectors_param = "embed/table"
    c.checkpoint_every_steps = 7
    c.max_checkpoints_to_keep = 2
    c.dp.enabled, c.dp.clip_norm, c.dp.noise_multiplier = False, 1.0, 1.0
    c.parallel.kind = "fsdp"
    return c


def nested_config():
    """flat_config's twin with sections."""
    c = ConfigDict()
    c.batch_size = 32
    c.model = {"name": "mlp"}
    c.data = default_config().data.to_dict()
    c.optimizer = default_config().optimizer.to_dict()
    c.step = {
        "grad_accum_steps": 4,
        "mixed_precision": True,
        "dp": {"enabled": False, "clip_norm": 1.0, "noise_multiplier": 1.0},
    }
    c.parallel = {"kind": "fsdp", "steps_per_call": 3, "cpu_devices": 0}
    c.transfer = {
        "init_from": "/runs/pre",
        "skip": ("head/.*",),
        "rename": ("enc/(.*)->body/\\1",),
        "freeze": ("body/layer_0/.*",),
        "backbone_lr_scale": 0.1,
        "vectors": "/runs/w2v",
        "vectors_param": "embed/table",
    }
    c.checkpoint = {"every_steps": 7, "max_to_keep": 2}
    for k in ("seed", "loss", "eval_batch_size", "num_train_steps", "log_every_steps"):
        c[k] = default_config()[k]
    c.eval_every_steps, c.progress_bar = 500, True
    return c


def test_flat_and_nested_twins_parse_to_equal_options():
    old, new = RunOptions.from_config(flat_config()), RunOptions.from_config(nested_config())
    assert old == new
    assert new.deprecations == ()
    assert old.step.grad_accum_steps == 4 and old.parallel.steps_per_call == 3
    assert old.transfer.rename == (("enc/(.*)", "body/\\1"),)
    assert old.checkpoint == CheckpointOptions(every_steps=7, max_to_keep=2)
    moved = {m.split()[2] for m in old.deprecations}
    assert {"grad_accum_steps", "dp.*", "init_skip", "checkpoint_every_steps"} <= moved


def test_migrate_is_pure_idempotent_and_one_line_per_key():
    config = flat_config()
    before = config.to_dict()
    once, messages = migrate(config)
    assert config.to_dict() == before  # the input is untouched
    twice, again = migrate(once)
    assert twice == once and again == []
    assert messages and all("\n" not in m and len(m) < 160 for m in messages)
    assert len(messages) == len(set(messages))
    assert (
        "config key init_skip is deprecated: use transfer.skip"
        in messages[[m.split()[2] for m in messages].index("init_skip")]
    )
    assert not set(opts.MOVED_KEYS) & set(once)


def test_placeholders_are_dropped_and_a_set_flat_key_wins():
    c = {"grad_accum_steps": None, "dp": {"enabled": None, "clip_norm": None}, "step": {}}
    out, messages = migrate(c)
    assert out == {"step": {}} and messages == []
    out, messages = migrate({"step": {"grad_accum_steps": 1}, "grad_accum_steps": 2})
    assert out == {"step": {"grad_accum_steps": 2}} and len(messages) == 1
    out, _ = migrate({"step": {"dp": {"clip_norm": 2.0}}, "dp": {"enabled": True}})
    assert out["step"]["dp"] == {"clip_norm": 2.0, "enabled": True}


def test_mesh_shape_is_retired_with_a_message_and_pmap_is_a_kind():
    out, messages = migrate({"parallel": {"kind": "pmap", "mesh_shape": (2,)}})
    assert out == {"parallel": {"kind": "pmap"}}
    assert len(messages) == 1 and "mesh_shape is retired" in messages[0]


def test_step_options_match_the_train_step_options():
    c = default_config()
    c.batch_size, c.grad_accum_steps, c.mixed_precision = 32, 4, True
    want = StepOptions(grad_accum_steps=4, compute_dtype="bfloat16")
    assert RunOptions.from_config(c).step.to_step_options() == want
    c = default_config()
    c.dp.enabled, c.dp.clip_norm, c.dp.noise_multiplier = True, 0.5, 1.3
    want = StepOptions(dp_clip_norm=0.5, dp_noise_multiplier=1.3)
    assert RunOptions.from_config(c).step.to_step_options() == want


@pytest.mark.parametrize(
    "over, message",
    [
        ({"batch_size": 0}, r"config batch_size must be an integer >= 1, got 0"),
        ({"step": {"grad_accum_steps": 3}}, r"step.grad_accum_steps 3 must divide batch_size 64"),
        ({"step": {"grad_acum_steps": 2}}, r"unknown config key step.grad_acum_steps \(did you"),
        ({"step": {"dp": {"enabled": True, "clip_norm": 0.0}}}, r"step.dp.clip_norm must be a"),
        ({"step": {"nonfinite": "skip"}}, r"unknown step.nonfinite 'skip' \(did you mean"),
        ({"parallel": {"kind": "shardded"}}, r"unknown parallel.kind 'shardded' \(did you mean"),
        ({"parallel": {"steps_per_call": 0}}, r"parallel.steps_per_call must be an integer >= 1"),
        ({"parallel": {"coordinator_address": "h:1"}}, r"needs parallel.num_processes"),
        ({"transfer": {"freeze": ("(",)}}, r"transfer.freeze: '\(' is not a regular expression"),
        ({"transfer": {"rename": ("a=>b",)}}, r"rename rule 'a=>b' must be 'old_regex->repl"),
        ({"transfer": {"backbone_lr_scale": 0.5}}, r"backbone_lr_scale needs transfer.skip"),
        ({"transfer": {"convert": "torch"}}, r"transfer.convert names how to read"),
        ({"checkpoint": {"preemption_signals": ("SIGTERN",)}}, r"'SIGTERN' \(did you mean 'SIGT"),
        ({"optimiser": {"name": "adam"}}, r"unknown config key optimiser \(did you mean optim"),
        ({"optimizer": {"name": "adamm"}}, r"unknown optimizer 'adamm' \(did you mean 'adam'"),
        ({"model": {"name": "mlpp"}}, r"unknown model 'mlpp' \(did you mean 'mlp'"),
        ({"loss": "xent"}, r"unknown loss 'xent'"),
        ({"init_from": "/x", "ensemble_size": 2}, r"init_from with parallel.ensemble_size > 1"),
    ],
)
def test_bad_values_name_the_key_in_one_line(over, message):
    c = migrate(default_config())[0]  # the nested form
    for k, v in over.items():
        c[k] = {**c[k], **v} if isinstance(v, dict) and isinstance(c.get(k), dict) else v
    with pytest.raises(ConfigError, match=message) as e:
        RunOptions.from_config(c)
    assert "\n" not in str(e.value)


def test_sections_fill_defaults_in_one_place():
    assert ParallelOptions.from_config({}) == ParallelOptions()
    assert TransferOptions.from_config({}) == TransferOptions()
    assert CheckpointOptions.from_config({}) == CheckpointOptions()
    assert TrainStepOptions.from_config({}, batch_size=8) == TrainStepOptions()
    parsed = RunOptions.from_config({})
    assert dataclasses.replace(parsed, data=RunOptions().data) == RunOptions()
    assert CheckpointOptions.from_config({"preemption_signals": (15, "SIGINT")}) == (
        CheckpointOptions(preemption_signals=("SIGTERM", "SIGINT"))
    )
    options = RunOptions.from_config(flat_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 1  # type: ignore[misc]
    assert options.data["name"] == "digits" and options.data.get("dir") is None
    with pytest.raises((TypeError, AttributeError)):
        options.data["name"] = "mnist"  # type: ignore[index]


def test_resumable_keys_come_from_field_metadata():
    keys = resumable_keys()
    assert {
        "num_train_steps",
        "checkpoint.every_steps",
        "checkpoint.max_to_keep",
        "parallel.kind",
        "parallel.steps_per_call",
        "transfer.init_from",
        "data.dir",
    } <= keys
    assert "parallel.mesh_shape" not in keys
    assert not {"seed", "batch_size", "step.grad_accum_steps", "parallel.ensemble_size"} & keys
    assert not {"transfer.freeze", "model.name", "optimizer.learning_rate"} & keys


def test_an_old_flat_saved_config_compares_to_its_nested_twin():
    saved = flat_config().to_dict()  # as an old checkpoint holds it (JSON: tuples are lists)
    saved["init_skip"] = list(saved["init_skip"])
    saved["parallel"]["kind"] = "pmap"  # resumable: a pmap run continues as sharded
    now = nested_config()
    now.num_train_steps = 5000  # resumable
    now.parallel.steps_per_call = 8  # resumable
    assert config_differences(saved, now) == []
    now.step.grad_accum_steps = 2
    now.model.hidden_sizes = (8,)
    diffs = config_differences(saved, now)
    assert diffs == [
        "model.hidden_sizes (saved '<missing>', now [8])",
        "step.grad_accum_steps (saved 4, now 2)",
    ]


def test_to_dict_is_json_and_parses_back_equal():
    import json

    options = RunOptions.from_config(flat_config())
    saved = json.loads(json.dumps(options.to_dict()))
    assert RunOptions.from_config(saved) == options
    assert saved["transfer"]["rename"] == [["enc/(.*)", "body/\\1"]]
    assert config_differences(saved, flat_config()) == []


def test_a_workdir_saved_before_the_sections_resumes_after_them(tmp_path):
    """A checkpoint whose saved config is the old flat ConfigDict (as the loop wrote it before
    the options) resumes under the nested config; a real difference is still refused."""
    from dlkit.train import restore_latest, train_and_evaluate

    c = default_config()
    c.model.hidden_sizes = (8,)
    c.batch_size, c.num_train_steps, c.progress_bar = 16, 2, False
    c.checkpoint_every_steps, c.grad_accum_steps = 2, 2
    train_and_evaluate(c, tmp_path)
    old = c.to_dict()  # the pre-sections format: every key flat, as the old loop saved it
    old.update(grad_accum_steps=2, steps_per_call=1, ensemble_size=1, mixed_precision=False)
    old.pop("step"), old.pop("checkpoint"), old.pop("transfer")
    (tmp_path / "checkpoints" / "2" / "config" / "metadata").write_text(json.dumps(old))
    saved = restore_latest(tmp_path)["config"]
    assert saved["grad_accum_steps"] == 2 and "step" not in saved  # written flat
    nested = RunOptions.from_config(c).to_dict()  # the same run, sections only
    assert "grad_accum_steps" not in nested and nested["step"]["grad_accum_steps"] == 2
    nested["num_train_steps"] = 4  # a longer run resumes
    assert config_differences(saved, nested) == []
    assert train_and_evaluate(RunOptions.from_config(nested), tmp_path)["step"] == 4
    nested["step"]["grad_accum_steps"] = 1
    assert config_differences(saved, nested) == ["step.grad_accum_steps (saved 2, now 1)"]


def test_every_shipped_config_parses():
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).parents[2] / "experiments" / "configs"
    paths = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    assert paths
    for path in paths:
        spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            continue
        options = RunOptions.from_config(module.get_config())
        assert RunOptions.from_config(options.to_dict()) == options, path.name


def test_defaults_come_from_the_options_and_flat_placeholders_stay_silent():
    c = opts.add_flat_placeholders(opts.defaults())
    parsed = RunOptions.from_config(c)
    assert parsed == RunOptions() and parsed.deprecations == ()
    c.lock()  # as config_flags locks it: a flag may only set existing fields
    c.grad_accum_steps = 4  # the old flag still works, and says where it moved
    c.transfer.skip = ("head/.*",)
    c.init_from = "/runs/pre"
    parsed = RunOptions.from_config(c)
    assert parsed.step.grad_accum_steps == 4 and parsed.transfer.init_from == "/runs/pre"
    assert [m.split()[2] for m in parsed.deprecations] == ["grad_accum_steps", "init_from"]


def test_fused_lstm_and_fused_gru_move_to_one_model_fused_flag():
    out, messages = migrate({"model": {"name": "char_lstm", "fused_lstm": False}})
    assert out == {"model": {"name": "char_lstm", "fused": False}}
    assert messages == [
        "config key model.fused_lstm is deprecated: use model.fused (--config.model.fused); "
        "the old key works for one more release"
    ]
    out, messages = migrate({"model": {"fused_lstm": True, "fused_gru": False}})
    assert out == {"model": {"fused": False}} and len(messages) == 2  # off if either is off
    old = {"model": {"name": "char_gru", "fused_gru": True}}
    new = {"model": {"name": "char_gru", "fused": True}}
    assert RunOptions.from_config(old) == RunOptions.from_config(new)
    assert config_differences(old, new) == []
    assert config_differences(old, {"model": {"name": "char_gru", "fused": False}}) == [
        "model.fused (saved True, now False)"
    ]


def test_one_parser_reads_any_section_from_its_field_metadata():
    """A new section is a dataclass with checked fields; parse_section does the rest."""

    @dataclasses.dataclass(frozen=True)
    class Inner(opts.Section):
        decay: float = opts.option(0.0, minimum=0.0)

    @dataclasses.dataclass(frozen=True)
    class Made(opts.Section):
        WHERE = "made."
        start_step: int = opts.option(0, minimum=0)
        kind: str = opts.option("a", choices=lambda: ("a", "b"))
        tags: tuple[str, ...] = opts.option((), parse=lambda v, key: tuple(v))
        inner: Inner = Inner()

    assert Made.from_config({}) == Made() and Made.from_config(None) == Made()
    got = Made.from_config({"start_step": 3, "kind": "b", "tags": ["x"], "inner": {"decay": 0.5}})
    assert got == Made(3, "b", ("x",), Inner(0.5))
    for bad, message in [
        ({"start_step": -1}, r"config made.start_step must be an integer >= 0, got -1"),
        ({"start_step": True}, r"made.start_step must be an integer"),
        ({"kind": "c"}, r"unknown made.kind 'c'; choose one of: a, b"),
        ({"inner": {"decay": -1.0}}, r"config made.inner.decay must be a number >= 0.0, got -1"),
        ({"inner": {"decai": 1.0}}, r"unknown config key made.inner.decai \(did you mean made."),
        ({"inner": 3}, r"config made.inner must be a section"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Made.from_config(bad)
    assert opts.as_dict(got) == {
        "start_step": 3,
        "kind": "b",
        "tags": ["x"],
        "inner": {"decay": 0.5},
    }


def test_the_name_choices_are_the_registries():
    from dlkit import models
    from dlkit.train import objectives, optim, parallel
    from dlkit.train.build import make_optimizer

    for name in optim.RULES:
        for schedule in optim.SCHEDULES:
            section = opts.OptimizerOptions.from_config({"name": name, "schedule": schedule})
            assert make_optimizer(section, 10) is not None
    for kind in parallel.KINDS:
        assert ParallelOptions.from_config({"kind": kind}).kind == kind
    for loss in objectives.OBJECTIVES:
        assert RunOptions.from_config({"loss": loss}).loss == loss
    assert (
        RunOptions.from_config({"model": {"name": models.names()[-1]}}).model.name
        == (models.names()[-1])
    )
