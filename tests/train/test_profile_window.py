"""The profiling window (config.profile): a jax.profiler trace of exactly the window's steps, with
step annotations, dispatches cut at its edges, resume inside it, and preemption inside it."""

import gzip
import json
import pathlib
import re
import signal

import jax
import pytest
from faults.fault_utils import signal_at

from dlkit.errors import ConfigError, Preempted
from dlkit.train import train_and_evaluate
from dlkit.train.config import default_config
from dlkit.train.options import RunOptions, config_differences
from dlkit.train.runner import Runner
from dlkit.train.schedule import steps_this_call

LINE = re.compile(r"^profile: trace of steps (\d+)\.\.(\d+) written to (\S+)(.*)$", re.M)


def tiny(start, num, **over):
    c = default_config()
    c.model.hidden_sizes = (16,)
    c.batch_size, c.num_train_steps, c.progress_bar = 16, 10, False
    c.log_every_steps, c.eval_every_steps, c.checkpoint.every_steps = 0, 0, 0
    c.profile.start_step, c.profile.num_steps = start, num
    for k, v in over.items():
        section, _, key = k.rpartition("__")
        (c[section] if section else c)[key] = v
    return c


def traced(capsys) -> list[tuple]:
    """(first, last, folder, rest) of each profile line printed since the last call."""
    out = capsys.readouterr().out
    return [(int(a), int(b), path, rest) for a, b, path, rest in LINE.findall(out)]


def annotated_steps(folder) -> list[int]:
    """step_num of the "train" StepTraceAnnotations in a trace folder's *.trace.json.gz."""
    (trace,) = [p for p in folder.glob("*.trace.json.gz")]
    events = json.load(gzip.open(trace))["traceEvents"]
    return sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")


def calls(monkeypatch) -> list[int]:
    """Records the number of steps of every dispatch."""
    real, sizes = Runner.train, []

    def train(self, state, batches):
        sizes.append(len(batches))
        return real(self, state, batches)

    monkeypatch.setattr(Runner, "train", train)
    return sizes


def test_window_writes_a_trace_of_its_steps(tmp_path, capsys):
    train_and_evaluate(tiny(3, 2), tmp_path)
    ((first, last, folder, rest),) = traced(capsys)
    assert (first, last, rest) == (3, 4, "")
    folder = pathlib.Path(folder)
    assert folder.parent == tmp_path / "profile" / "plugins" / "profile"  # TensorBoard's layout
    assert list(folder.glob("*.xplane.pb")) and (folder / "perfetto_trace.json.gz").exists()
    assert annotated_steps(folder) == [3, 4]


def test_steps_per_call_are_cut_at_the_window_edges(tmp_path, capsys, monkeypatch):
    sizes = calls(monkeypatch)
    train_and_evaluate(tiny(5, 3, num_train_steps=12, parallel__steps_per_call=4), tmp_path)
    assert sizes == [4, 1, 3, 4]  # calls start at 0, 4, 5 (the window) and 8 (its end)
    ((first, last, folder, _),) = traced(capsys)
    assert (first, last) == (5, 7)
    assert annotated_steps(pathlib.Path(folder)) == [5]  # one call: steps 5, 6, 7
    assert steps_this_call(4, 12, steps_per_call=4, edges=(5, 8)) == 1
    assert steps_this_call(5, 12, steps_per_call=4, edges=(5, 8)) == 3
    assert steps_this_call(9, 12, steps_per_call=4, edges=(5, 8)) == 3


def test_resume_inside_the_window_traces_what_remains(tmp_path, capsys):
    train_and_evaluate(tiny(3, 4), tmp_path, stop_after_step=5)
    ((first, last, _, rest),) = traced(capsys)
    assert (first, last, rest) == (3, 4, " (the run stopped at step 5)")
    train_and_evaluate(tiny(3, 4), tmp_path, stop_after_step=8)
    assert [t[:2] for t in traced(capsys)] == [(5, 6)]
    train_and_evaluate(tiny(9, 1), tmp_path)  # another window on resume: a resumable change
    assert [t[:2] for t in traced(capsys)] == [(9, 9)]
    train_and_evaluate(tiny(0, 2), tmp_path)  # finished, and the window long past: no trace
    assert traced(capsys) == []
    assert config_differences(tiny(3, 4), tiny(0, 0)) == []


def test_preemption_inside_the_window_stops_the_trace(tmp_path, capsys, monkeypatch):
    signal_at(monkeypatch, 4, [signal.SIGTERM])
    with pytest.raises(Preempted, match="Preempted at step 4"):
        train_and_evaluate(tiny(2, 5), tmp_path)
    ((first, last, _, rest),) = traced(capsys)
    assert (first, last, rest) == (2, 3, " (the run stopped at step 4)")
    jax.profiler.start_trace(tmp_path / "again")  # no trace was left running
    jax.profiler.stop_trace()


def test_profile_options_are_checked():
    assert RunOptions.from_config(tiny(0, 0)).profile.num_steps == 0
    for key in ("start_step", "num_steps"):
        with pytest.raises(ConfigError, match=rf"profile\.{key} must be an integer >= 0"):
            RunOptions.from_config(tiny(0, 1, **{f"profile__{key}": -1}))
