"""What a model with a closed vocabulary understands, and the prompt words it would silently ignore.

A model trained on a small, known set of words (the embedded one: docs/algorithms.md, "The embedded model")
records them in its `flowcanvas.json` as `{"vocabulary": {"colour": [...], "shape": [...], "size": [...],
"synonyms": {"big": "large", ...}}}`.
The canvas shows them beside the Prompt (`hint`), and TextEncode warns about a colour, shape or size word
that the model does not know (`unknown_words`): the prompt still runs, but the model cannot draw a "pink
hexagon", and a newcomer should hear that rather than guess from a grey square.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

CATEGORIES = ("colour", "shape", "size")

# Common English words for each category, so that an unknown one can be recognised as a colour (or a shape, or
# a size) the model lacks, rather than an ordinary word it may ignore ("a", "on", "background").
COMMON_WORDS: dict[str, frozenset[str]] = {
    "colour": frozenset(
        "red orange yellow green cyan blue purple violet white black grey gray pink brown magenta gold golden "
        "silver teal navy beige maroon lime indigo turquoise olive crimson scarlet lavender tan cream ivory "
        "aqua azure coral salmon mint peach amber emerald ruby khaki charcoal rainbow".split()
    ),
    "shape": frozenset(
        "circle square triangle diamond cross ring star heart rectangle oval ellipse hexagon pentagon octagon "
        "crescent moon arrow line dot sphere cube cylinder cone pyramid spiral polygon trapezoid rhombus "
        "parallelogram semicircle donut plus box ball disc disk blob".split()
    ),
    "size": frozenset("small large big tiny little huge giant enormous massive mini medium miniature".split()),
}


class Vocabulary(BaseModel):
    """The words a model knows, per category, and other words it reads as one of them (as in flowcanvas.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    colour: tuple[str, ...] = ()
    shape: tuple[str, ...] = ()
    size: tuple[str, ...] = ()
    synonyms: dict[str, str] = {}  # another word → the word it means ("gray" → "grey")

    def words(self, category: str) -> tuple[str, ...]:
        """The category's words, without synonyms."""
        return getattr(self, category)

    def knows(self, category: str, word: str) -> bool:
        return self.synonyms.get(word, word) in self.words(category)


def hint(vocabulary: Vocabulary) -> str:
    """A short line for the Prompt widget: 'Knows red, orange, … · circle, square, … · small, large'."""
    return "Knows " + " · ".join(", ".join(vocabulary.words(c)) for c in CATEGORIES if vocabulary.words(c))


def unknown_words(text: str, vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """(category, word) for each colour, shape or size word in `text` that `vocabulary` lacks, in order, once.

    A plural of a known word counts as known ("circles"); one of an unknown word as unknown ("hexagons").
    """
    found: list[tuple[str, str]] = []
    for word in re.findall(r"[a-z]+", text.lower()):
        singular = word[:-1] if word.endswith("s") and word[:-1] in COMMON_WORDS["shape"] else word
        for category in CATEGORIES:
            if singular in COMMON_WORDS[category] and not vocabulary.knows(category, singular):
                if (category, singular) not in found:
                    found.append((category, singular))
    return found


def warning(text: str, vocabulary: Vocabulary) -> str | None:
    """The TextEncode warning for `text`, or None when every colour, shape and size word is known."""
    unknown = unknown_words(text, vocabulary)
    if not unknown:
        return None
    named = ", ".join(f'"{word}" ({category})' for category, word in unknown)
    pronoun = "them" if len(unknown) > 1 else "it"
    missed = [c for c in CATEGORIES if any(category == c for category, _ in unknown)]
    known = "; ".join(f"{c}s {', '.join(vocabulary.words(c))}" for c in missed)
    return f"this model does not know {named} and ignores {pronoun}; it knows {known}"
