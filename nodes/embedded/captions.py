"""Captions as people write them, generated from a scene: the words the embedded model is trained and tested on.

A scene always has a size, an object colour, a shape and a background; a caption names some of them, in
one of several phrasings, with synonyms, optional articles, stray punctuation and spacing, and any letter
case ("a red circle on a blue background", "red circle, blue background", "A BIG RED CIRCLE.",
"circle in red on blue"). A caption never names what the scene does not show: an attribute it leaves
out is whatever the scene drew at random, so the model learns that "a red circle" may be any size on any
background.

Phrasings come in two disjoint sets: TRAINING_PHRASINGS, which training captions use, and
HELD_OUT_PHRASINGS, which only the benches use, to measure whether the model learned the words or the
templates (docs/algorithms.md, "The embedded model"). Each phrasing joins an object phrase ("a large red
circle", "a circle in red") and, when the background is named, a background phrase ("a blue background",
"blue") with its own function words; the sets share words, never skeletons.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nodes.embedded.dataset import COLOURS, SHAPES, SIZES, Scene
from nodes.vocabulary import COMMON_WORDS, Vocabulary

# Words people use for the same thing; the first of each is the dataset's own name.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "large": ("large", "big"),
    "small": ("small", "tiny", "little"),
    "grey": ("grey", "gray"),
    "purple": ("purple", "violet"),
}
# The word a caption uses for the object when it does not name the shape.
GENERIC_OBJECT = "shape"

# How often an attribute is left out of a caption. Size is often unsaid, as in most prompts; colour or shape
# less often (never both: the object must be named by something).
OMIT_RATE: dict[str, float] = {"size": 0.5, "background": 0.25, "colour": 0.1, "shape": 0.05}


@dataclass(frozen=True)
class Caption:
    """A caption's text, the attributes it promises, and the phrasing it was written in."""

    text: str
    named: frozenset[str]
    phrasing: str


def word_for(value: str, rng: np.random.Generator) -> str:
    """The dataset's name for `value` or one of its synonyms, at random."""
    choices = SYNONYMS.get(value, (value,))
    return choices[int(rng.integers(len(choices)))]


def _article(rng: np.random.Generator, following: str) -> str:
    """'a ' / 'an ' before `following`, or nothing (people drop articles about a quarter of the time)."""
    if rng.random() < 0.25:
        return ""
    return "an " if following[0] in "aeiou" else "a "


@dataclass(frozen=True)
class Words:
    """The words one caption uses for the scene's attributes; None for an attribute it leaves out."""

    size: str | None
    colour: str | None
    shape: str | None
    background: str | None


def object_adjectives(words: Words, rng: np.random.Generator) -> str:
    """'a large red circle', 'red shape', 'a big circle'."""
    phrase = " ".join(w for w in (words.size, words.colour, words.shape or GENERIC_OBJECT) if w)
    return _article(rng, phrase) + phrase


def object_in_colour(words: Words, rng: np.random.Generator) -> str:
    """'a circle in red', 'large circle in red'; the adjective form when colour or shape is unsaid."""
    if words.colour is None or words.shape is None:
        return object_adjectives(words, rng)
    phrase = " ".join(w for w in (words.size, words.shape) if w)
    return f"{_article(rng, phrase)}{phrase} in {words.colour}"


def object_colour_after(words: Words, rng: np.random.Generator) -> str:
    """'a circle, red', 'large circle red' (tag-style prompts); the adjective form when colour or shape is unsaid."""
    if words.colour is None or words.shape is None:
        return object_adjectives(words, rng)
    phrase = " ".join(w for w in (words.size, words.shape) if w)
    comma = "," if rng.random() < 0.5 else ""
    return f"{_article(rng, phrase)}{phrase}{comma} {words.colour}"


def background_full(words: Words, rng: np.random.Generator) -> str:
    """'a blue background', 'blue background'."""
    return _article(rng, words.background or "") + f"{words.background} background"


def background_short(words: Words, rng: np.random.Generator) -> str:
    """'a blue background' or just 'blue'."""
    return background_full(words, rng) if rng.random() < 0.6 else f"{words.background}"


def object_phrase(words: Words, rng: np.random.Generator) -> str:
    roll = rng.random()
    if roll < 0.2:
        return object_in_colour(words, rng)
    if roll < 0.3:
        return object_colour_after(words, rng)
    return object_adjectives(words, rng)


Phrasing = Callable[[Words, np.random.Generator], str]

TRAINING_PHRASINGS: dict[str, Phrasing] = {
    "on": lambda w, rng: f"{object_phrase(w, rng)} on {background_short(w, rng)}",
    "against": lambda w, rng: f"{object_phrase(w, rng)} against {background_short(w, rng)}",
    "comma": lambda w, rng: f"{object_phrase(w, rng)}, {w.background} background",
    "background with": lambda w, rng: f"{background_full(w, rng)} with {object_phrase(w, rng)}",
    "in front of": lambda w, rng: f"{object_phrase(w, rng)} in front of {background_full(w, rng)}",
    "over": lambda w, rng: f"{object_phrase(w, rng)} over {background_short(w, rng)}",
    "and": lambda w, rng: f"{object_phrase(w, rng)} and {background_full(w, rng)}",
    "background and": lambda w, rng: f"{background_full(w, rng)} and {object_phrase(w, rng)}",
    "background behind": lambda w, rng: f"{background_full(w, rng)} behind {object_phrase(w, rng)}",
}
# Skeletons training never uses: the background first after a comma, a leading "on", "with" after the object,
# "on top of". Training puts the background first and last with the same words ("and"), so that the only cue
# to which colour is the background's is the word "background" beside it: the cue these skeletons keep.
HELD_OUT_PHRASINGS: dict[str, Phrasing] = {
    "background first": lambda w, rng: f"{w.background} background, {object_phrase(w, rng)}",
    "leading on": lambda w, rng: f"on {background_full(w, rng)}, {object_phrase(w, rng)}",
    "object with": lambda w, rng: f"{object_phrase(w, rng)} with {background_full(w, rng)}",
    "on top of": lambda w, rng: f"{object_phrase(w, rng)} on top of {background_short(w, rng)}",
}
# With the background unsaid, a caption is the object phrase alone; its held-out form names the colour after
# the shape with a word training never uses.
TRAINING_OBJECT_ONLY = "object only"
HELD_OUT_OBJECT_ONLY = "coloured"


def _object_only_held_out(words: Words, rng: np.random.Generator) -> str:
    """'a circle coloured red' / 'large circle coloured red'."""
    phrase = " ".join(w for w in (words.size, words.shape) if w)
    return f"{_article(rng, phrase)}{phrase} coloured {words.colour}"


def _style(text: str, rng: np.random.Generator) -> str:
    """Letter case, a trailing full stop or exclamation mark, doubled or stray spaces: what typing adds."""
    roll = rng.random()
    if roll < 0.1:
        text = text.upper()
    elif roll < 0.25:
        text = text[0].upper() + text[1:]
    roll = rng.random()
    if roll < 0.2:
        text += "."
    elif roll < 0.25:
        text += "!"
    if rng.random() < 0.1:
        spaces = [m.start() for m in re.finditer(" ", text)]
        if spaces:
            at = spaces[int(rng.integers(len(spaces)))]
            text = text[:at] + "  " + text[at:]
    if rng.random() < 0.05:
        text = f" {text} "
    return text


def _named(rng: np.random.Generator, held_out: bool) -> frozenset[str]:
    """Which attributes a caption names. Held-out captions always name colour and shape: leaving either out
    falls back to the adjective form, which training captions use."""
    named = {name for name, rate in OMIT_RATE.items() if rng.random() >= rate}
    if held_out:
        named |= {"colour", "shape"}
    elif "colour" not in named and "shape" not in named:
        named.add("shape")
    return frozenset(named)


def describe(scene: Scene, rng: np.random.Generator, *, held_out: bool = False, nonsense: bool = True) -> Caption:
    """A caption of `scene` in a phrasing drawn from the training set, or from the held-out set. `nonsense`
    lets a training caption carry a made-up word (see NONSENSE_RATE)."""
    named = _named(rng, held_out)
    words = Words(
        size=word_for(scene.size, rng) if "size" in named else None,
        colour=word_for(scene.colour, rng) if "colour" in named else None,
        shape=scene.shape if "shape" in named else None,
        background=word_for(scene.background, rng) if "background" in named else None,
    )
    if "background" in named:
        phrasings = HELD_OUT_PHRASINGS if held_out else TRAINING_PHRASINGS
        names = tuple(phrasings)
        phrasing = names[int(rng.integers(len(names)))]
        text = phrasings[phrasing](words, rng)
    elif held_out:
        phrasing, text = HELD_OUT_OBJECT_ONLY, _object_only_held_out(words, rng)
    else:
        phrasing, text = TRAINING_OBJECT_ONLY, object_phrase(words, rng)
    if nonsense and not held_out and rng.random() < NONSENSE_RATE:
        text = _with_nonsense_word(text, rng)
    return Caption(text=_style(text, rng), named=named, phrasing=phrasing)


# Every word a caption can use for a colour, shape or size, and what it means.
KNOWN_WORDS: dict[str, tuple[str, str]] = {
    **{word: ("colour", name) for name in COLOURS for word in SYNONYMS.get(name, (name,))},
    **{shape: ("shape", shape) for shape in SHAPES},
    **{word: ("size", name) for name in SIZES for word in SYNONYMS.get(name, (name,))},
}


# Training captions sometimes carry a made-up word, anywhere: people type words the model never learned
# ("please", "nice", "top"), and without this it reads their byte pieces as if they meant something (a first
# version drew half of "a big square coloured blue" wrong). Held-out captions never get one.
NONSENSE_RATE = 0.15
NONSENSE_MAX_WORDS = 7  # only into captions this short, so a caption still fits the model's 16 tokens
# The tokenizer spells an unseen word in byte pieces, merged as far as its merges go, so an unseen word that
# ends in a known one ends in that word's own token: "coloured" is "c o l o u" + "red</w>", and a model that
# never met such a word draws "a square coloured blue" red (docs/algorithms.md, "The embedded model"). This
# share of made-up words ends in a word captions use for an attribute, so the model learns that a known
# word's token glued to the pieces before it names nothing.
NONSENSE_GLUED_RATE = 0.5
GLUED_WORDS = (*KNOWN_WORDS, "background")
_NOT_NONSENSE = frozenset(
    {*KNOWN_WORDS, *(w for words in COMMON_WORDS.values() for w in words), "background", "top", "coloured"}
)


def _with_nonsense_word(text: str, rng: np.random.Generator) -> str:
    """`text` with a random non-word inserted at a random word boundary: 3–5 lowercase letters, or 2–4 and a
    word of GLUED_WORDS after them."""
    words = text.split(" ")
    if len(words) > NONSENSE_MAX_WORDS:
        return text
    while True:
        letters = rng.integers(ord("a"), ord("z") + 1, size=int(rng.integers(3, 6)))
        nonsense = "".join(map(chr, letters))
        if rng.random() < NONSENSE_GLUED_RATE:
            nonsense = nonsense[:-1] + GLUED_WORDS[int(rng.integers(len(GLUED_WORDS)))]
        if nonsense not in _NOT_NONSENSE:
            break
    words.insert(int(rng.integers(len(words) + 1)), nonsense)
    return " ".join(words)


def normalise(text: str) -> str:
    """What the text encoder's tokenizer sees: lower case, single spaces, no trailing punctuation."""
    return re.sub(r"\s+", " ", text.lower()).strip().rstrip(".!").strip()


def vocabulary() -> Vocabulary:
    """The words the trained model knows, as its flowcanvas.json declares them (nodes/vocabulary.py)."""
    synonyms = {word: name for name, words in SYNONYMS.items() for word in words if word != name}
    return Vocabulary(colour=COLOURS, shape=SHAPES, size=SIZES, synonyms=synonyms)
