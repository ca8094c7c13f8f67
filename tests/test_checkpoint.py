"""Checkpoints and the run record they keep: each writes and reads itself, and ``Session.resume`` reopens an
interrupted run from the checkpoint alone, the same way for the API as for the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nst_engine.api import Session
from nst_engine.checkpoint import Checkpoint
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.events import Event, StepDone
from nst_engine.records import RunRecord, Trace
from nst_engine.spec import ModelSpec

SIZE = 40


def test_a_checkpoint_and_its_run_record_read_back_as_written(tmp_path: Path) -> None:
    spec = ModelSpec(model=tmp_path / "m.onnx", weights="random:3", network="vgg16", provider="cpu", use_cache=False)
    record = RunRecord(tmp_path / "a.jpg", tmp_path / "o.png", (tmp_path / "s.jpg",), (tmp_path / "m.png",),
                       tmp_path / "k.png", spec, "jcjohnson")  # fmt: skip
    image = torch.rand(1, 3, 8, 12)
    state = {"history": torch.arange(6.0)}
    settings = StyleConfig(size=32).to_dict()
    Checkpoint(1, 7, image, state, settings, "abc", 19, record).save(tmp_path / "c.ckpt")
    back = Checkpoint.read(tmp_path / "c.ckpt")
    assert back.run == record and back.run.stands_alone
    assert (back.scale, back.step, back.steps_done, back.content) == (1, 7, 19, "abc")
    assert torch.equal(back.image, image) and torch.equal(back.optimizer["history"], state["history"])
    assert back.settings == json.loads(json.dumps(settings))


def test_a_run_record_of_a_tensor_does_not_stand_alone() -> None:
    record = RunRecord(None, Path("/o.png"))
    assert not record.stands_alone
    assert RunRecord.from_dict(record.to_dict(), "x") == record


@pytest.mark.parametrize(
    ("key", "value"), [("styles", "s.jpg"), ("content", 3), ("use_cache", "yes"), ("preset", ["a"]), ("output", None)]
)
def test_a_crafted_run_record_is_refused_in_one_line(key: str, value: object) -> None:
    data = RunRecord(Path("/a.jpg"), Path("/o.png"), (Path("/s.jpg"),)).to_dict() | {key: value}
    with pytest.raises(ConfigError, match=f"record of '{key}' is not a path or name"):
        RunRecord.from_dict(data, "checkpoint 'c.ckpt'")


def test_session_resume_continues_alone_to_the_uninterrupted_picture_and_trace(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, style = pair
    config = StyleConfig(size=SIZE, steps=6)
    spec = ModelSpec(model=model_path)
    full = Session(config, [style], model=spec).stylize(content)

    def stop_after_two(event: Event) -> None:
        if isinstance(event, StepDone) and event.record["step"] == 2:
            session.stop("test")

    session = Session(config, [style], model=spec, on_event=stop_after_two)
    trace = tmp_path / "trace.json"
    from nst_engine.jobs import Job

    (first,) = session.run([Job(content, tmp_path / "out.png")], trace=trace)
    assert first.status == "interrupted" and first.checkpoint is not None
    resumed = Session.resume(first.checkpoint)  # nothing but the checkpoint
    assert resumed.job.content == content.resolve() and resumed.job.output == (tmp_path / "out.png").resolve()
    assert resumed.session.config.to_dict() == config.to_dict()
    assert resumed.session.spec.model == model_path.resolve()
    (rest,) = resumed.run(trace=trace)
    assert rest.status == "done" and rest.image is not None and full.image is not None
    assert torch.equal(rest.image, full.image)
    assert not first.checkpoint.exists()  # finished: its checkpoint has done its work
    data = json.loads(trace.read_text())
    assert [s["step"] for s in data["steps"]] == [1, 2, 3, 4, 5, 6]
    assert data["resumed_from"]["steps_before"] == 2


def test_session_resume_takes_new_steps_and_refuses_other_settings(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, style = pair
    config = StyleConfig(size=SIZE, steps=4)
    ckpt = tmp_path / "out.png.ckpt"
    output = (tmp_path / "out.png").resolve()
    record = RunRecord(content.resolve(), output, (style.resolve(),), spec=ModelSpec(model_path))
    Checkpoint(0, 1, torch.rand(1, 3, 30, 40), settings=config.to_dict(), run=record).save(ckpt)
    assert Session.resume(ckpt, changes={"steps": 9}).session.config.steps == 9
    with pytest.raises(ConfigError, match=r"other settings \(tv_weight\)"):
        Session.resume(ckpt, changes={"tv_weight": 1.0}).run()
    Checkpoint(0, 1, torch.rand(1, 3, 30, 40), settings=config.to_dict()).save(ckpt)
    with pytest.raises(ConfigError, match="does not record its inputs"):
        Session.resume(ckpt)


def test_a_trace_reads_back_only_its_own_interrupted_steps(tmp_path: Path) -> None:
    steps = [{"step": 1, "losses": {"total": 1.0}}]
    one = {"output": str(tmp_path / "o.png"), "result": {"interrupted": True}, "steps": steps}
    Trace({"engine_version": "x"}, [one], batch=False).write(tmp_path / "t.json")
    assert Trace.steps_before(tmp_path / "t.json", tmp_path / "o.png") == steps
    assert Trace.steps_before(tmp_path / "t.json", tmp_path / "other.png") == []
    (tmp_path / "bad.json").write_text("{not json")
    assert Trace.steps_before(tmp_path / "bad.json", tmp_path / "o.png") == []
    finished = one | {"result": {"interrupted": False}}
    Trace({}, [finished], batch=False).write(tmp_path / "done.json")
    assert Trace.steps_before(tmp_path / "done.json", tmp_path / "o.png") == []
