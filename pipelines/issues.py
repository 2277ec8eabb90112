"""Structured problems with a workflow: `{node, field, code, message, hint}`, reported all at once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Issue(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    node: str | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ".".join(p for p in (self.node, self.field) if p)
        text = f"[{self.code}] {where + ': ' if where else ''}{self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class WorkflowInvalid(Exception):
    """A workflow (or overrides) failed validation; carries every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues
