"""The README's commands and snippets work as written (what a newcomer copies first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import running_app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://127.0.0.1:7860/"


def section(title: str) -> str:
    """The README's text from the `## title` heading to the next one."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_http_api_snippet_runs_as_written(home: Path, monkeypatch: pytest.MonkeyPatch):
    [snippet] = python_blocks(section("HTTP API"))
    assert DEFAULT_URL in snippet, "the snippet talks to the default address"
    monkeypatch.chdir(REPO)  # the snippet names the starter by its path in the repository, as a user's shell would
    with running_app(home) as (url, _storage):
        namespace: dict[str, object] = {}
        exec(compile(snippet.replace(DEFAULT_URL, url), "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["status"] == "succeeded" and namespace["issues"] == []
    images = namespace["images"]
    assert isinstance(images, list) and len(images) == 1


def test_the_install_section_names_a_cpu_only_torch_and_how_to_change_the_port():
    install = section("Install and run")
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(encoding="utf-8"), flags=re.M)
    assert pinned and f"pip install torch=={pinned.group(1)} --index-url" in install and "/whl/cpu" in install
    assert "python run.py --port 8000" in install
