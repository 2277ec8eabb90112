"""The import recogniser and the PNG export (app/ui/sharing.py): FlowCanvas files give back the exact workflow;
ComfyUI, InvokeAI and other files are recognised and described; bad files get a specific message."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from app.ui.sharing import MAX_IMPORT_BYTES, ImportKind, export_filename, recognise, workflow_png
from pipelines.workflow import PNG_WORKFLOW_KEY, canonical_json, load_workflow

SWATCH = Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "swatch.json"

COMFY_UI = {
    "last_node_id": 3,
    "last_link_id": 1,
    "links": [[1, 1, 0, 2, 0, "MODEL"]],
    "version": 0.4,
    "nodes": [
        {"id": 1, "type": "CheckpointLoaderSimple"},
        {"id": 2, "type": "KSampler"},
        {"id": 3, "type": "KSampler"},
    ],
}
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
}
INVOKE_WORKFLOW = {
    "name": "t2i",
    "meta": {"version": "3.0.0"},
    "edges": [],
    "nodes": [
        {"id": "a", "type": "invocation", "data": {"type": "main_model_loader"}},
        {"id": "b", "type": "invocation", "data": {"type": "denoise_latents"}},
    ],
}


def png(text: dict[str, str] | None = None, size: tuple[int, int] = (8, 8)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, "#3b82f6").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_a_flowcanvas_json_file_gives_back_its_workflow() -> None:
    found = recognise(SWATCH.read_bytes(), "swatch.json")
    assert found.kind is ImportKind.FLOWCANVAS
    assert found.workflow == load_workflow(SWATCH)
    assert "Colour swatch" in found.message


def test_a_flowcanvas_png_gives_back_the_exact_workflow_it_carries() -> None:
    document = canonical_json(load_workflow(SWATCH))
    found = recognise(png({PNG_WORKFLOW_KEY: document, "flowcanvas_run": "{}"}), "out.png")
    assert found.kind is ImportKind.FLOWCANVAS
    assert found.workflow is not None and canonical_json(found.workflow) == document


def test_the_exported_png_round_trips_and_drops_text_the_picture_carried(tmp_path: Path) -> None:
    document = canonical_json(load_workflow(SWATCH))
    older = tmp_path / "older-run.png"
    older.write_bytes(png({PNG_WORKFLOW_KEY: '{"format": "something else"}'}, size=(20, 12)))
    exported = workflow_png(document, "Colour swatch", older)
    with Image.open(io.BytesIO(exported)) as image:
        assert image.size == (20, 12)  # the output picture, not a card
        assert image.text == {PNG_WORKFLOW_KEY: document}
    found = recognise(exported, "export.png")
    assert found.workflow is not None and canonical_json(found.workflow) == document


def test_a_workflow_without_an_output_exports_as_a_title_card() -> None:
    exported = workflow_png("{}", "<b>name</b>")
    with Image.open(io.BytesIO(exported)) as image:
        assert image.size == (256, 256)
        assert image.text == {PNG_WORKFLOW_KEY: "{}"}


def test_comfyui_json_and_png_are_recognised_with_their_node_types() -> None:
    ui = recognise(json.dumps(COMFY_UI).encode(), "comfy.json")
    assert ui.kind is ImportKind.COMFYUI and ui.workflow is None
    assert "ComfyUI UI workflow with 3 nodes" in ui.message and "KSampler ×2" in ui.message
    prompt = recognise(json.dumps(COMFY_PROMPT).encode(), "prompt.json")
    assert prompt.kind is ImportKind.COMFYUI and "API prompt with 2 nodes" in prompt.message
    image = recognise(png({"workflow": json.dumps(COMFY_UI), "prompt": json.dumps(COMFY_PROMPT)}), "ComfyUI_001.png")
    assert image.kind is ImportKind.COMFYUI
    assert "UI workflow with 3 nodes" in image.message and "API prompt with 2 nodes" in image.message
    broken = recognise(png({"prompt": "{not json"}), "half.png")
    assert broken.kind is ImportKind.COMFYUI and "not valid JSON" in broken.message


def test_invokeai_files_are_recognised() -> None:
    workflow = recognise(json.dumps(INVOKE_WORKFLOW).encode(), "invoke.json")
    assert workflow.kind is ImportKind.INVOKEAI
    assert "InvokeAI workflow with 2 nodes" in workflow.message and "denoise_latents" in workflow.message
    image = recognise(
        png({"invokeai_metadata": json.dumps({"seed": 1}), "invokeai_workflow": json.dumps(INVOKE_WORKFLOW)}),
        "invoke.png",
    )
    assert image.kind is ImportKind.INVOKEAI
    assert "InvokeAI image" in image.message and "InvokeAI workflow with 2 nodes" in image.message


def test_plain_and_a1111_pngs_carry_no_workflow() -> None:
    plain = recognise(png(), "photo.png")
    assert plain.kind is ImportKind.NO_WORKFLOW and plain.workflow is None
    assert plain.message == "photo.png: a PNG with no workflow in it"
    a1111 = recognise(png({"parameters": "a cat\nSteps: 20, Sampler: Euler"}), "a1111.png")
    assert a1111.kind is ImportKind.A1111 and "'a cat'" in a1111.message


def test_bad_files_get_specific_messages() -> None:
    not_json = recognise(b'{"format": "flowcanvas.workflow",', "cut.json")
    assert not_json.kind is ImportKind.INVALID and "not valid JSON" in not_json.message and "line 1" in not_json.message
    other_json = recognise(b"[1, 2, 3]", "list.json")
    assert other_json.kind is ImportKind.INVALID and "JSON, but not a workflow" in other_json.message
    bad_workflow = recognise(
        json.dumps({"format": "flowcanvas.workflow", "version": 1, "nodes": {"a": {"type": ""}}}).encode(), "bad.json"
    )
    assert bad_workflow.kind is ImportKind.INVALID and "not a usable FlowCanvas workflow" in bad_workflow.message
    assert "a." in bad_workflow.message or "[schema]" in bad_workflow.message
    newer = recognise(json.dumps({"format": "flowcanvas.workflow", "version": 99}).encode(), "new.json")
    assert newer.kind is ImportKind.INVALID and "version 99" in newer.message
    binary = recognise(b"\xff\xd8\xff\xe0 a jpeg", "photo.jpg")
    assert binary.kind is ImportKind.INVALID and "neither a PNG nor JSON" in binary.message
    truncated = recognise(png()[:40], "cut.png")
    assert truncated.kind is ImportKind.INVALID and "not a readable PNG" in truncated.message
    bad_chunk = recognise(png({PNG_WORKFLOW_KEY: "{nope"}), "damaged.png")
    assert bad_chunk.kind is ImportKind.INVALID and "flowcanvas_workflow chunk" in bad_chunk.message
    huge = recognise(b" " * (MAX_IMPORT_BYTES + 1), "huge.json")
    assert huge.kind is ImportKind.INVALID and "too large" in huge.message


def test_export_file_names_are_safe() -> None:
    assert export_filename("Colour swatch", 3, "png") == "colour-swatch-v3.png"
    assert export_filename("../../etc/passwd", 1, "json") == "etc-passwd-v1.json"
    assert export_filename("<>", 2, "json") == "workflow-v2.json"


def raw_png(width: int, height: int, idat: bytes, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG written chunk by chunk (greyscale, 1 bit per pixel), so its header may claim any size."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + b"".join(chunk(kind, body) for kind, body in chunks)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def test_a_huge_image_carrying_a_workflow_is_recognised_without_decoding_a_pixel():
    import zlib

    document = canonical_json(load_workflow(SWATCH))
    rows = zlib.compress(bytes(13000 * (1 + 1625)), 9)  # 13000 × 13000 px: 169 Mpx, ~20 KB compressed
    text = (b"tEXt", PNG_WORKFLOW_KEY.encode() + b"\0" + document.encode("latin-1"))
    found = recognise(raw_png(13000, 13000, rows, text), "huge.png")
    assert found.kind is ImportKind.FLOWCANVAS and canonical_json(found.workflow) == document
    # A header claiming 200,000 × 200,000 px (past PIL's decompression-bomb refusal) is read the same way.
    assert recognise(raw_png(200_000, 200_000, rows), "claims.png").kind is ImportKind.NO_WORKFLOW


def test_a_compressed_text_chunk_that_inflates_past_the_cap_is_refused_not_inflated():
    import zlib

    bomb = (b"zTXt", b"parameters\0\0" + zlib.compress(b" " * (40 * 1024**2), 9))  # 40 MB of spaces in ~40 KB
    found = recognise(raw_png(8, 8, zlib.compress(bytes(8 * 2)), bomb), "bomb.png")
    assert found.kind is ImportKind.INVALID and "more than 16 MB of text" in found.message


def test_broken_pngs_are_described_not_raised():
    import zlib

    good = raw_png(8, 8, zlib.compress(bytes(8 * 2)))
    for broken, words in [
        (good[:30], "ends inside"),
        (good[:20] + b"\xff" + good[21:], "CRC mismatch"),
        (b"\x89PNG\r\n\x1a\n" + good[33:], "IHDR"),
    ]:
        found = recognise(broken, "broken.png")
        assert found.kind is ImportKind.INVALID and words in found.message, found.message


def test_json_nested_past_the_interpreters_limit_is_described_not_raised():
    from pipelines.issues import WorkflowInvalid
    from pipelines.workflow import workflow_from_json

    deep = ("[" * 100_000 + "]" * 100_000).encode()
    assert recognise(deep, "deep.json").message == "deep.json: JSON nested too deeply to be a workflow"
    try:
        workflow_from_json(deep)
    except WorkflowInvalid as invalid:
        assert [i.message for i in invalid.issues] == ["the JSON is nested too deeply to be a workflow"]
    else:
        raise AssertionError("a 100,000-deep document was accepted")
