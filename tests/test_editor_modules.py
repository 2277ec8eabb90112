"""The editor's pure JavaScript modules (app/ui/editor/static): their own `node --test` suite, and a check that
the workflows they produce are ones the server accepts and runs the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipelines.flatten import flatten
from pipelines.validate import validate_workflow
from pipelines.workflow import ID_SEPARATOR, Link, load_workflow

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "app" / "ui" / "editor" / "static"


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "`node` is not on PATH: install Debian's nodejs (apt-get install nodejs) to test the editor's JavaScript"
        )
    return found


def test_javascript_suite_passes():
    result = subprocess.run(
        [node_binary(), "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.fail(f"node --test tests/js/ failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


# Builds workflows with the editor's modules and prints them as JSON: {name: {"original": ..., "edited": ...}}.
PRODUCE = """
import { readFileSync, readdirSync } from "node:fs";
import { Graph, emptyWorkflow } from "GRAPH";
import { copySelection, pasteClipboard } from "CLIPBOARD";

const catalogue = JSON.parse(readFileSync("CATALOGUE", "utf-8"));
const out = {};

const built = new Graph(emptyWorkflow("built"), catalogue);
const id = (type, params) => built.addNode(type, { params });
const [model, text, latent, noise, schedule, solver, sampler, decode, save, width, guidance] = [
  id("LoadFlowModel"), id("TextEncode", { text: "a red circle" }), id("EmptyLatent"), id("Noise", { seed: 7 }),
  id("ModelSchedule"), id("HeunSolver"), id("Sampler"), id("VAEDecode"), id("SaveImage"), id("Int", { value: 512 }),
  id("Int", { value: 5 })];
for (const [from, output, to, input] of [
  [model, "text_encoder", text, "encoder"], [model, "model", latent, "model"], [model, "model", schedule, "model"],
  [model, "model", sampler, "model"], [text, "positive", sampler, "positive"], [latent, "latent", sampler, "latent"],
  [schedule, "sigmas", sampler, "sigmas"], [solver, "solver", sampler, "solver"], [noise, "noise", sampler, "noise"],
  [model, "vae", decode, "vae"], [sampler, "latent", decode, "latent"], [decode, "image", save, "images"],
  [width, "value", latent, "width"], [width, "value", schedule, "width"], [guidance, "value", sampler, "guidance"]]) {
  built.connect(from, output, to, input);
}
out["built"] = { original: built.toWorkflow(), edited: built.toWorkflow() };

for (const name of readdirSync("TEMPLATES").filter((n) => n.endsWith(".json")).sort()) {
  const original = JSON.parse(readFileSync(`TEMPLATES/${name}`, "utf-8"));
  const ids = Object.keys(original.nodes);
  for (const [label, selection] of [["all", ids], ...ids.map((i) => [i, [i]])]) {
    const graph = new Graph(original, catalogue);
    graph.groupIntoSubgraph(selection, { name: "Group" });
    out[`${name} grouped ${label}`] = { original, edited: graph.toWorkflow() };
  }
  const nested = new Graph(original, catalogue);
  const inner = nested.groupIntoSubgraph(ids.slice(0, 1)).node;
  nested.groupIntoSubgraph([inner, ...ids.slice(1)]);
  out[`${name} nested`] = { original, edited: nested.toWorkflow() };
  const pasted = new Graph(original, catalogue);
  pasteClipboard(pasted, copySelection(pasted, ids));
  out[`${name} pasted`] = { original: null, edited: pasted.toWorkflow() };
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def produced() -> dict[str, dict[str, Any]]:
    script = (
        PRODUCE.replace("GRAPH", (STATIC / "graph.mjs").as_uri())
        .replace("CLIPBOARD", (STATIC / "clipboard.mjs").as_uri())
        .replace("CATALOGUE", str(ROOT / "tests" / "js" / "catalogue.json"))
        .replace("TEMPLATES", str(ROOT / "pipelines" / "templates"))
    )
    result = subprocess.run(
        [node_binary(), "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.fail(f"building workflows with the editor's modules failed:\n{result.stderr}")
    return json.loads(result.stdout)


def flat_graph(document: dict[str, Any]) -> dict[str, Any]:
    """The flattened nodes with subgraph prefixes stripped: what actually runs, whatever the grouping."""

    def local(node_id: str) -> str:
        return node_id.rsplit(ID_SEPARATOR, 1)[-1]

    def links(value: Link | list[Link]) -> Any:
        return [links(v) for v in value] if isinstance(value, list) else (local(value.node), value.output)

    flattened = flatten(load_workflow(document))
    assert flattened.issues == []
    return {
        local(n.id): (n.type, n.type_version, n.params, {k: links(v) for k, v in n.inputs.items()}, n.title)
        for n in flattened.nodes.values()
    }


def test_edited_workflows_are_valid_and_run_the_same_graph(produced: dict[str, dict[str, Any]]):
    assert len(produced) > 30
    for name, pair in produced.items():
        edited = load_workflow(pair["edited"])
        issues = validate_workflow(edited)
        assert issues == [], f"{name}: {issues}"
        if pair["original"] is not None:
            assert flat_graph(pair["edited"]) == flat_graph(pair["original"]), name


def test_the_catalogue_the_javascript_tests_use_is_current():
    """tests/js/catalogue.json may lag behind new node types, but what it describes must still be true."""
    from nodes.catalogue import catalogue

    def shape(spec: dict[str, Any]) -> dict[str, Any]:
        without_descriptions = json.loads(json.dumps(spec))
        for part in [
            without_descriptions,
            *without_descriptions["inputs"],
            *without_descriptions["outputs"],
            *without_descriptions["params"],
        ]:
            part.pop("description", None)
        return without_descriptions

    current = {spec["type"]: shape(spec) for spec in catalogue()["nodes"]}
    saved = json.loads((ROOT / "tests" / "js" / "catalogue.json").read_text(encoding="utf-8"))
    stale = [spec["type"] for spec in saved["nodes"] if current.get(spec["type"]) != shape(spec)]
    assert not stale, (
        f"node specs changed since tests/js/catalogue.json was written ({', '.join(stale)}): "
        "rerun `python run.py nodes --json > tests/js/catalogue.json` and the JavaScript tests"
    )


def test_params_have_titles_a_person_reads():
    """The canvas labels params with `title`: the Field's own title, else the name humanised; `name` is kept."""
    from pydantic import Field

    from nodes.catalogue import catalogue
    from nodes.registry import NodeParams, param_spec

    class Params(NodeParams):
        negative_prompt: str = ""
        vae_tiling: bool = False
        steps: int = Field(4, title="Sampling steps")

    specs = {name: param_spec(name, info) for name, info in Params.model_fields.items()}
    assert {name: (spec["name"], spec["title"]) for name, spec in specs.items()} == {
        "negative_prompt": ("negative_prompt", "Negative prompt"),
        "vae_tiling": ("vae_tiling", "VAE tiling"),
        "steps": ("steps", "Sampling steps"),
    }
    untitled = [
        f"{spec['type']}.{param['name']}"
        for spec in catalogue()["nodes"]
        for param in spec["params"]
        if not param.get("title")
    ]
    assert untitled == []
