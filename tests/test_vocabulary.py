"""A closed-vocabulary model (the embedded one) says what it knows: a hint in the catalogue for the Prompt, and a
warning on TextEncode, from the engine to the canvas's run state and the CLI, for a colour, shape or size word
the model lacks. The prompt still runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.ui.canvas_runs import RunState
from nodes.catalogue import catalogue
from nodes.models.loader import MANAGER, LoadOptions, ModelLoadError, read_vocabulary
from nodes.vocabulary import Vocabulary, hint, unknown_words, warning
from pipelines.executor import Executor, RunEvent
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow

TEMPLATE = Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "txt2img-embedded.json"
SHAPES = Vocabulary(
    colour=("red", "blue", "grey"), shape=("circle", "star"), size=("small", "large"), synonyms={"gray": "grey"}
)


def test_unknown_words_are_the_colour_shape_and_size_words_the_model_lacks():
    assert unknown_words("a red circle on a gray background", SHAPES) == []
    assert unknown_words("A PINK Hexagon on pink, huge!", SHAPES) == [
        ("colour", "pink"),
        ("shape", "hexagon"),
        ("size", "huge"),
    ]
    assert unknown_words("two circles, three hexagons", SHAPES) == [("shape", "hexagon")]
    assert unknown_words("a photo of a cat", SHAPES) == [], "ordinary words are not colours or shapes"
    assert warning("a pink star", SHAPES) == (
        'this model does not know "pink" (colour) and ignores it; it knows colours red, blue, grey'
    )
    assert warning("a red star", SHAPES) is None
    assert hint(SHAPES) == "Knows red, blue, grey · circle, star · small, large"


def test_a_bad_vocabulary_in_flowcanvas_json_is_a_load_error_naming_the_field():
    assert read_vocabulary({}) is None
    with pytest.raises(ModelLoadError, match="vocabulary"):
        read_vocabulary({"vocabulary": {"colour": "red", "flavour": ["sweet"]}})


def test_the_catalogue_carries_the_embedded_models_hint_and_the_prompt_declares_where_to_look():
    specs = catalogue()
    assert "circle" in specs["vocabularies"]["embedded:shapes"] and "red" in specs["vocabularies"]["embedded:shapes"]
    text = next(p for n in specs["nodes"] if n["type"] == "TextEncode" for p in n["params"] if p["name"] == "text")
    assert text["vocabulary_from"] == "encoder"


@pytest.fixture(scope="module")
def embedded():
    yield MANAGER.get("embedded:shapes", LoadOptions(device="cpu"))
    MANAGER.free()


def run_prompt(executor: Executor, prompt: str) -> list[RunEvent]:
    events: list[RunEvent] = []
    plan = build_plan(load_workflow(TEMPLATE), {"Prompt": prompt, "Steps": 2}, target="decode")
    executor.execute(plan, run_id="t", sinks=[events.append])
    return events


def test_an_unknown_word_warns_on_the_prompt_node_and_the_run_still_succeeds(embedded):
    assert embedded.text_encoder.vocabulary is not None
    executor = Executor(device="cpu")
    assert not [e for e in run_prompt(executor, "a red circle on a blue background") if e.kind == "node_warning"]
    for attempt in ("ran", "cached"):
        events = run_prompt(executor, "a pink hexagon on a blue background")
        warned = [e for e in events if e.kind == "node_warning"]
        assert len(warned) == 1, attempt
        (entry,) = warned[0].data["warnings"]
        assert entry["field"] == "text" and '"pink" (colour)' in entry["message"] and '"hexagon"' in entry["message"]
        prompt_node = warned[0].node
        assert any(
            e.kind == ("node_finished" if attempt == "ran" else "node_cached") and e.node == prompt_node for e in events
        )
    state = RunState("t", lambda path: path)
    for event in events:
        state.apply(event)
    assert state.nodes[prompt_node]["warnings"] == [entry["message"]]


def test_the_cli_prints_the_warning_and_exits_0(embedded, home: Path, tmp_path: Path, capsys):
    argv = ["run", str(TEMPLATE), "--set", "Prompt=a huge red circle", "--set", "Steps=2", "--out", str(tmp_path)]
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [run["status"] for run in json.loads(out)["runs"]] == ["succeeded"]
    assert "warning: run 1: " in err and '"huge" (size)' in err
