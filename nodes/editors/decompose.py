"""Decompose Prompt: split an edit (source prompt → target prompt) into sub-prompts with one change each, for
SplitFlow, with no network.

By default the two prompts are compared word by word (position by position when they have as many words,
as attribute edits do); every changed phrase (a replaced, inserted or removed run of
words, and each word of an equal-length replacement, such as "small red" → "large green") is one change.
Sub-prompt k is the source with change k made. With more changes than sub-prompts allowed, neighbouring
changes share a sub-prompt. Users with a local instruction-tuned language model (SplitFlow's authors use
Mistral-7B-Instruct) can point the node at its folder instead; it is loaded from disk only, from safetensors.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from nodes.registry import Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

Opcode = tuple[str, int, int, int, int]


ARTICLES = frozenset({"a", "an", "the"})


def word_changes(source: list[str], target: list[str]) -> list[Opcode]:
    """The changed runs between two word lists, equal-length replacements split into single words; a change
    of article alone ("a" → "an" before a new colour) joins the change right after it."""
    changes: list[Opcode] = []
    if len(source) == len(target):
        # Attribute edits swap words in place; aligning by position avoids matching the old object colour with
        # the new background colour ("a purple triangle, red background" → "a cyan square, purple background").
        changes = [("replace", i, i + 1, i, i + 1) for i, (a, b) in enumerate(zip(source, target)) if a != b]
    for tag, i1, i2, j1, j2 in [] if changes else SequenceMatcher(a=source, b=target, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            changes += [("replace", i, i + 1, j1 + k, j1 + k + 1) for k, i in enumerate(range(i1, i2))]
        else:
            changes.append((tag, i1, i2, j1, j2))
    merged: list[Opcode] = []
    for change in reversed(changes):
        _, i1, i2, j1, j2 = change
        only_articles = {w.lower() for w in source[i1:i2] + target[j1:j2]} <= ARTICLES
        if only_articles and merged and merged[-1][1] == i2 and merged[-1][3] == j2:
            _, _, next_i2, _, next_j2 = merged.pop()
            change = ("replace", i1, next_i2, j1, next_j2)
        merged.append(change)
    return merged[::-1]


def apply_changes(source: list[str], target: list[str], changes: list[Opcode]) -> str:
    """The source with only the given changes made."""
    words: list[str] = []
    position = 0
    for _, i1, i2, j1, j2 in sorted(changes, key=lambda change: change[1]):
        words += source[position:i1] + target[j1:j2]
        position = i2
    return " ".join(words + source[position:])


def decompose_prompt(source: str, target: str, max_parts: int = 3) -> list[str]:
    """Up to `max_parts` sub-prompts, each the source with one (group of) change(s) towards the target.

    Identical prompts give [target]: there is nothing to split."""
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, got {max_parts}")
    source_words, target_words = source.split(), target.split()
    changes = word_changes(source_words, target_words)
    if not changes:
        return [" ".join(target_words)]
    parts = min(max_parts, len(changes))
    # Consecutive groups as even as possible: the first `extra` groups take one change more.
    size, extra = divmod(len(changes), parts)
    groups, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        groups.append(changes[start:end])
        start = end
    return [apply_changes(source_words, target_words, group) for group in groups]


INSTRUCTION = (
    "An image is described by the source prompt. The target prompt describes the edited image. Write the edit as "
    "at most {parts} sub-prompts, each the source prompt with exactly one of the changes made, one per line, "
    "nothing else.\nSource prompt: {source}\nTarget prompt: {target}\nSub-prompts:\n"
)
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


@lru_cache(maxsize=1)
def _language_model(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return tokenizer, model.eval()


def decompose_with_language_model(
    folder: Path, source: str, target: str, max_parts: int = 3, max_new_tokens: int = 96
) -> list[str]:
    """Sub-prompts written by a local causal language model (greedy decoding, so the same every time): its
    answer's non-empty lines, list marks removed, at most `max_parts`."""
    import torch

    tokenizer, model = _language_model(folder)
    request = INSTRUCTION.format(parts=max_parts, source=source, target=target)
    if getattr(tokenizer, "chat_template", None):
        request = tokenizer.apply_chat_template(
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
    inputs = tokenizer(request, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return parse_sub_prompts(
        tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), max_parts
    )


def parse_sub_prompts(answer: str, max_parts: int) -> list[str]:
    """A language model's answer → its non-empty lines, list marks ('-', '1.', '2)') removed, at most `max_parts`."""
    lines = [_LIST_MARK.sub("", line).strip() for line in answer.splitlines()]
    return [line for line in lines if line][:max_parts]


@node(
    "DecomposePrompt",
    category="conditioning",
    outputs=[Output("sub_prompts", SocketType.PROMPTS, "One prompt per change, for SplitFlow's sub_prompts")],
)
class DecomposePrompt(Node):
    """Split an edit into sub-prompts that each make one change (rule-based, offline)."""

    class Params(NodeParams):
        source_text: str = Field(
            ...,
            min_length=1,
            max_length=20_000,
            description="The prompt of the source image.",
            json_schema_extra={"widget": "multiline"},
        )
        target_text: str = Field(
            ...,
            min_length=1,
            max_length=20_000,
            description="The same prompt with every change made.",
            json_schema_extra={"widget": "multiline"},
        )
        max_parts: int = Field(
            3,
            ge=1,
            le=8,
            description=("At most this many sub-prompts; with more changes, neighbouring changes are grouped."),
        )
        language_model: str = Field(
            "",
            max_length=4096,
            description=(
                "Optional: a local folder with an instruction-tuned language model to write the sub-prompts "
                "instead of the word-by-word rule. Blank: the rule."
            ),
            json_schema_extra={"reads": "folder"},
        )

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        if not params.source_text.strip() or not params.target_text.strip():
            field = "source_text" if not params.source_text.strip() else "target_text"
            raise NodeError("the prompt is blank", field=field)
        if not params.language_model.strip():
            return {"sub_prompts": decompose_prompt(params.source_text, params.target_text, params.max_parts)}
        folder = ctx.resolve_path(params.language_model, field="language_model")
        if not folder.is_dir():
            raise NodeError(
                f"no model folder at {params.language_model!r}",
                field="language_model",
                hint="a folder with config.json, tokenizer files and .safetensors weights, or blank",
            )
        try:
            parts = decompose_with_language_model(folder, params.source_text, params.target_text, params.max_parts)
        except (OSError, ValueError) as error:
            raise NodeError(
                f"cannot use the language model in {params.language_model!r}: {error}", field="language_model"
            ) from None
        if not parts:
            raise NodeError(
                "the language model wrote no sub-prompts",
                field="language_model",
                hint="try another model, or leave the field blank for the word-by-word rule",
            )
        return {"sub_prompts": parts}
