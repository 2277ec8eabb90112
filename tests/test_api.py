"""The HTTP API through gradio_client against a live server, and the server's launch rules.

The app runs in this process on its own data folder and worker pool; workflows run on the committed embedded
model. Confinement tests check that a workflow arriving over HTTP cannot name files or models outside what
the server offers, and that nothing is read or queued when it tries.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from gradio_client import Client
from PIL import Image

from app.commands import ServeRefused, launch_options
from nodes import image as image_nodes
from pipelines.workflow import PNG_WORKFLOW_KEY
from tests.conftest import running_app

TEMPLATES = Path(__file__).resolve().parents[1] / "pipelines" / "templates"
STARTER = json.loads((TEMPLATES / "txt2img-embedded.json").read_text(encoding="utf-8"))
FAST = {"Steps": 4, "Prompt": "a large red circle on a blue background", "Seed": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("api-data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


def load_image_workflow(path: str) -> dict:
    return {
        "format": "flowcanvas.workflow",
        "version": 1,
        "name": "load",
        "nodes": {
            "load": {"type": "LoadImage", "params": {"path": path}},
            "show": {"type": "PreviewImage", "inputs": {"images": {"node": "load", "output": "image"}}},
        },
    }


def test_the_api_lists_named_typed_endpoints_and_no_ui_events(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {
        f"/{name}"
        for name in (
            "validate",
            "run",
            "run_status",
            "cancel",
            "workflows_list",
            "workflows_get",
            "workflows_save",
            "workflows_delete",
            "runs_list",
            "runs_get",
        )
    }
    run = endpoints["/run"]
    assert [p["parameter_name"] for p in run["parameters"]] == ["workflow", "overrides", "target", "wait"]
    assert run["parameters"][0]["python_type"]["type"].startswith("dict")
    assert "Queue a workflow" in run["description"]


def test_a_workflow_runs_through_the_api_and_returns_its_image_and_run_id(client, server):
    run_id, status, outputs, issues = client.predict(STARTER, FAST, None, True, api_name="/run")
    assert status == "succeeded" and issues == [] and len(run_id) > 8
    [path] = outputs
    with Image.open(path) as image:
        assert image.size == (64, 64)
        assert json.loads(image.text[PNG_WORKFLOW_KEY])["nodes"]["schedule"]["params"]["steps"] == 4
    record, files = client.predict(run_id, api_name="/run_status")
    assert record["status"] == "succeeded" and record["overrides"]["Steps"] == 4
    assert Path(files[0]).read_bytes() == Path(path).read_bytes()
    assert set(record["node_timings"]) >= {"sampler", "decode", "save"}
    listed = client.predict(10, "", "", api_name="/runs_list")
    assert run_id in [r["id"] for r in listed]
    full, _ = client.predict(run_id, api_name="/runs_get")
    assert full["workflow"]["nodes"]["sampler"]["type"] == "Sampler"
    assert server[1].get_run(run_id).status == "succeeded"


def test_an_invalid_workflow_returns_structured_issues_and_queues_nothing(client, server):
    broken = json.loads(json.dumps(STARTER))
    del broken["nodes"]["sampler"]["inputs"]["model"]
    before = len(server[1].list_runs(limit=1000))
    run_id, status, outputs, issues = client.predict(broken, {"Steps": 0}, None, True, api_name="/run")
    assert (run_id, status, outputs) == ("", "invalid", [])
    found = {(i["node"], i["field"], i["code"]) for i in issues}
    assert ("sampler", "model", "missing_input") in found
    assert ("schedule", "steps", "out_of_bounds") in found
    assert client.predict(broken, {"Steps": 0}, api_name="/validate") == issues
    assert len(server[1].list_runs(limit=1000)) == before
    assert client.predict(STARTER, None, api_name="/validate") == []


@pytest.mark.adversarial
def test_a_subgraph_expansion_bomb_is_refused_by_the_api_without_expanding_it(client, server):
    # Ten instances of the next level, seven levels deep: 10⁷ nodes named by a few kilobytes.
    subgraphs = {"s7": {"nodes": {"c": {"type": "Int", "params": {"value": 1}}}}}
    for depth in range(6, -1, -1):
        subgraphs[f"s{depth}"] = {
            "nodes": {f"i{k}": {"type": "Subgraph", "subgraph": f"s{depth + 1}"} for k in range(10)}
        }
    bomb = {
        **STARTER,
        "subgraphs": subgraphs,
        "nodes": {**STARTER["nodes"], "top": {"type": "Subgraph", "subgraph": "s0"}},
    }
    before = len(server[1].list_runs(limit=1000))
    issues = client.predict(bomb, None, api_name="/validate")
    assert [(i["code"], i["field"]) for i in issues] == [("too_large", "nodes")]
    run_id, status, _, run_issues = client.predict(bomb, None, None, True, api_name="/run")
    assert (run_id, status, run_issues) == ("", "invalid", issues)
    assert len(server[1].list_runs(limit=1000)) == before


@pytest.mark.adversarial
@pytest.mark.parametrize("path", ["/etc/passwd", "../../secret.png", "~/.ssh/id_rsa.png"])
def test_files_outside_the_data_folder_are_refused_and_never_read(client, server, path, monkeypatch):
    reads: list[str] = []
    real_read = image_nodes._read_file
    monkeypatch.setattr(image_nodes, "_read_file", lambda ctx, raw: (reads.append(raw), real_read(ctx, raw))[1])
    before = len(server[1].list_runs(limit=1000))
    issues = client.predict(load_image_workflow(path), None, api_name="/validate")
    assert [(i["node"], i["field"], i["code"]) for i in issues] == [("load", "path", "not_allowed")]
    assert "outside the folders this run may read" in issues[0]["message"]
    run_id, status, _, run_issues = client.predict(load_image_workflow(path), None, None, True, api_name="/run")
    assert (run_id, status) == ("", "invalid") and run_issues == issues
    assert reads == [] and len(server[1].list_runs(limit=1000)) == before


def test_a_file_in_the_data_folder_and_the_starter_images_may_be_read(client, server):
    home = server[1].home
    Image.new("RGB", (8, 8), "green").save(home / "uploads-test.png")
    for path in (
        "uploads-test.png",
        str(home / "uploads-test.png"),
        "pipelines/templates/images/red-circle-on-blue.png",
    ):
        run_id, status, outputs, issues = client.predict(load_image_workflow(path), None, None, True, api_name="/run")
        assert status == "succeeded", (path, issues)


@pytest.mark.adversarial
def test_model_sources_are_limited_to_embedded_and_configured_ones(client, tmp_path):
    for source in ("/etc", "stabilityai/stable-diffusion-3-medium-diffusers", str(tmp_path)):
        issues = client.predict(STARTER, {"Model": source}, api_name="/validate")
        assert [(i["node"], i["field"], i["code"]) for i in issues] == [("model", "source", "not_allowed")], source
        assert "FLOWCANVAS_MODEL_SOURCES" in issues[0]["hint"]


def test_configured_model_sources_are_accepted(client, monkeypatch):
    monkeypatch.setenv("FLOWCANVAS_MODEL_SOURCES", "stabilityai/stable-diffusion-3-medium-diffusers, other/model")
    issues = client.predict(STARTER, {"Model": "stabilityai/stable-diffusion-3-medium-diffusers"}, api_name="/validate")
    assert issues == []


def test_the_library_round_trips_through_the_api(client):
    saved = client.predict(STARTER, "", "first", None, api_name="/workflows_save")
    assert saved["current_version"] == 1 and saved["name"] == STARTER["name"]
    changed = json.loads(json.dumps(STARTER))
    changed["nodes"]["schedule"]["params"]["steps"] = 9
    second = client.predict(changed, saved["id"], "fewer steps", 1, api_name="/workflows_save")
    assert second["current_version"] == 2
    with pytest.raises(Exception, match="version"):
        client.predict(changed, saved["id"], "stale", 1, api_name="/workflows_save")
    listed = client.predict(STARTER["name"], "", api_name="/workflows_list")
    assert saved["id"] in [w["id"] for w in listed]
    got = client.predict(saved["id"], None, api_name="/workflows_get")
    assert got["version"] == 2 and got["workflow"]["nodes"]["schedule"]["params"]["steps"] == 9
    assert sorted((v["version"], v["message"]) for v in got["versions"]) == [(1, "first"), (2, "fewer steps")]
    first = client.predict(saved["id"], 1, api_name="/workflows_get")["workflow"]
    assert first["nodes"]["schedule"]["params"] == STARTER["nodes"]["schedule"]["params"]
    assert client.predict(saved["id"], api_name="/workflows_delete") is True
    with pytest.raises(Exception, match="no workflow"):
        client.predict(saved["id"], None, api_name="/workflows_get")


def test_saving_an_invalid_document_is_refused_with_its_issues(client):
    with pytest.raises(Exception, match="a.type"):
        client.predict(
            {"format": "flowcanvas.workflow", "version": 1, "nodes": {"a": {"params": {}}}},
            "",
            "",
            None,
            api_name="/workflows_save",
        )


@pytest.mark.adversarial
def test_with_auth_unauthenticated_requests_are_refused(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("auth-data"), auth=("ada", "s3cret")) as (url, _):
        assert requests.get(url + "gradio_api/info", timeout=10).status_code == 401
        response = requests.post(url + "gradio_api/call/validate", json={"data": [STARTER, None]}, timeout=10)
        assert response.status_code == 401
        with pytest.raises(Exception):  # noqa: B017 (gradio_client raises its own error or httpx's, by version)
            Client(url, verbose=False)
        authed = Client(url, auth=("ada", "s3cret"), verbose=False)
        assert authed.predict(STARTER, None, api_name="/validate") == []


def test_serving_off_this_machine_needs_a_login_or_insecure():
    assert launch_options("127.0.0.1", 7860, None, False)["auth"] is None
    assert launch_options("::1", 7860, None, False)["server_name"] == "::1"
    with pytest.raises(ServeRefused, match="--auth USER:PASSWORD"):
        launch_options("0.0.0.0", 7860, None, False)
    with pytest.raises(ServeRefused, match="--auth"):
        launch_options("studio.local", 7860, None, False)
    assert launch_options("0.0.0.0", 7860, "ada:s3:cret", False)["auth"] == ("ada", "s3:cret")
    assert launch_options("0.0.0.0", 7860, None, True)["auth"] is None
    with pytest.raises(ServeRefused, match="USER:PASSWORD"):
        launch_options("0.0.0.0", 7860, "ada", False)


@pytest.mark.adversarial
@pytest.mark.parametrize(
    "api_name,arguments,words",
    [
        ("/runs_list", {"limit": 2**70}, "limit: Input should be less than or equal to 2147483647"),
        ("/runs_list", {"limit": "many"}, "limit: Input should be a valid integer"),
        ("/workflows_get", {"ref": "x", "version": 2**64}, "version: Input should be less than or equal to"),
        ("/workflows_save", {"workflow": STARTER, "expected_version": 2**63}, "expected_version: Input should be less"),
        ("/run_status", {"run_id": 5}, "run_id: Input should be a valid string"),
        ("/runs_get", {"run_id": "r" * 100_000}, "run_id: String should have at most 1000 characters"),
        ("/validate", {"workflow": STARTER, "overrides": "Steps=3"}, "overrides: Input should be a valid dictionary"),
        ("/workflows_save", {"workflow": STARTER, "message": "a\x00b"}, "message: Value error, contains a NUL"),
    ],
)
def test_arguments_of_the_wrong_type_or_size_get_a_structured_error_and_change_nothing(
    client, server, api_name: str, arguments: dict, words: str
):
    before = (len(server[1].list_runs(limit=1000)), len(server[1].list_workflows()))
    with pytest.raises(Exception, match=re.escape(words)):
        client.predict(**arguments, api_name=api_name)
    assert (len(server[1].list_runs(limit=1000)), len(server[1].list_workflows())) == before


@pytest.mark.adversarial
def test_a_lone_surrogate_is_refused_at_the_boundary_by_pydantic_itself():
    # gradio_client cannot even encode one; a plain HTTP client can send "\\ud800" in JSON.
    import gradio as gr

    from app.api import _check_arguments

    with pytest.raises(
        gr.Error, match="search: Input should be a valid string, unable to parse raw data as a unicode string"
    ):
        _check_arguments(search="a\ud800b")


@pytest.mark.adversarial
def test_one_upload_request_is_limited_in_all_whatever_its_number_of_files(server):
    """The per-file cap let three 40 MB files through in one request; the request's total is capped too, from
    its Content-Length or, without one, as the body streams in."""
    url = server[0] + "gradio_api/upload"
    big = b"\0" * (20 * 1024 * 1024)
    files = [("files", (f"part{i}.png", big, "image/png")) for i in range(3)]
    refused = requests.post(url, files=files, timeout=60)
    assert (refused.status_code, refused.text) == (413, "an upload request is limited to 53 MB in all")

    prepared = requests.Request("POST", url, files=files).prepare()

    def streamed():  # the same body without a Content-Length: chunked transfer
        for start in range(0, len(prepared.body), 1024 * 1024):
            yield prepared.body[start : start + 1024 * 1024]

    chunked = requests.post(
        url, data=streamed(), headers={"Content-Type": prepared.headers["Content-Type"]}, timeout=60
    )
    assert (chunked.status_code, chunked.text) == (413, refused.text)
    small = requests.post(url, files=[("files", ("one.png", b"\x89PNG small", "image/png"))], timeout=30)
    assert small.status_code == 200 and len(small.json()) == 1
