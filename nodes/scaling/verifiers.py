"""Verifiers: scorers of how well images show a prompt, for inference-time scaling (docs/algorithms.md,
"Inference-time scaling").

A VERIFIER value scores a batch of images [B, 3, H, W] in [0, 1] against the prompt it was made with; higher
is closer. The particle sampler only compares scores, so any scorer fits the socket. Two are built in:

- Prompt Adherence (embedded model): the shapes analyzer reads the image's background colour, object colour,
  shape and size, and the score is the share of the attributes the prompt names that it reads as named, each
  weighted by the analyzer's confidence (so a sure match counts more than a toss-up, and ties between
  candidates that match alike break towards the clearer one);
- CLIP Score (any model): the cosine similarity of CLIP's image and text embeddings, from a CLIP loaded
  through transformers (a local folder or a hub id; safetensors only).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nodes.embedded.analyzer import Analysis, analyze
from nodes.embedded.captions import KNOWN_WORDS
from nodes.registry import Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType


class Verifier(ABC):
    """Scores images against the prompt it was made with: a float per image, higher is closer."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What it scores, for run records and the bench."""

    @abstractmethod
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """[B] float32 scores of images [B, 3, H, W] in [0, 1]."""


# ---------------------------------------------------------------------------------------------- prompts

ATTRIBUTES = ("background", "colour", "shape", "size")
# Words that put the colour after them on the background when "background" itself is not said ("circle on blue").
BACKGROUND_PREPOSITIONS = frozenset({"on", "against", "over", "behind", "of"})
# The words, besides colours, shapes and sizes, that place a colour on the object or the background.
SIGNIFICANT_WORDS = BACKGROUND_PREPOSITIONS | {"background", "with", "and", "in", "front", "top", "shape"}


@dataclass(frozen=True)
class PromptAttributes:
    """What a prompt to the embedded model names; None for what it leaves to the model."""

    background: str | None = None
    colour: str | None = None
    shape: str | None = None
    size: str | None = None

    @property
    def named(self) -> dict[str, str]:
        return {name: value for name in ATTRIBUTES if (value := getattr(self, name)) is not None}


@lru_cache(maxsize=1024)  # a verifier reads its prompt at every scoring round of a search
def read_prompt(prompt: str) -> PromptAttributes:
    """The attributes a prompt names, in any of the ways people write them: "a red circle on a blue
    background", "blue background, small red circle", "circle in red on blue", "a circle coloured red".

    A colour is the background's when the next word that means something is "background", or the one before
    it is a background preposition ("on", "against", "over", "behind", "on top of"); articles and words the
    model does not know are skipped ("over a … red"). The first other colour is the object's."""
    words = [w[:-1] if w.endswith("s") and w[:-1] in KNOWN_WORDS else w for w in re.findall(r"[a-z]+", prompt.lower())]
    meanings = [KNOWN_WORDS.get(w) for w in words]
    colours = [i for i, m in enumerate(meanings) if m is not None and m[0] == "colour"]
    significant = [i for i, w in enumerate(words) if w in KNOWN_WORDS or w in SIGNIFICANT_WORDS]

    def names_background(i: int) -> bool:
        place = significant.index(i)
        after = words[significant[place + 1]] if place + 1 < len(significant) else None
        before = words[significant[place - 1]] if place > 0 else None
        return after == "background" or before in BACKGROUND_PREPOSITIONS

    background = next((i for i in colours if names_background(i)), None)
    colour = next((i for i in colours if i != background), None)
    first = {
        category: next((m[1] for m in meanings if m is not None and m[0] == category), None)
        for category in ("shape", "size")
    }
    return PromptAttributes(
        background=meanings[background][1] if background is not None else None,
        colour=meanings[colour][1] if colour is not None else None,
        shape=first["shape"],
        size=first["size"],
    )


# ---------------------------------------------------------------------------------------------- verifiers


def adherence(found: Analysis, wanted: PromptAttributes) -> float:
    """Share of the named attributes the analysis reads as named, each weighted by its confidence in [0.5, 1]
    (a match read with no confidence still beats a miss); 0 when no object is found or nothing is named."""
    named = wanted.named
    if not found.has_object or not named:
        return 0.0
    total = 0.0
    for name, value in named.items():
        if getattr(found, name) == value:
            total += 0.5 + 0.5 * float(getattr(found, f"{name}_confidence"))
    return total / len(named)


@dataclass(frozen=True)
class AdherenceVerifier(Verifier):
    """Prompt adherence read by the shapes analyzer (the embedded model's testbed)."""

    prompt: str

    @property
    def description(self) -> str:
        return f"prompt adherence to {self.prompt!r} (shapes analyzer)"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        wanted = read_prompt(self.prompt)
        return torch.tensor([adherence(analyze(image), wanted) for image in images.float().cpu()])


# CLIP's own image normalisation (openai/clip-vit-*): what its image processor applies after resizing.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipVerifier(Verifier):
    """CLIP score: cosine similarity of the image and prompt embeddings (in [-1, 1])."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any  # transformers.CLIPTokenizer
    prompt: str
    source: str

    @property
    def description(self) -> str:
        return f"CLIP score against {self.prompt!r} ({self.source})"

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        device, dtype = self.model.device, self.model.dtype
        size = self.model.config.vision_config.image_size
        pixels = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        pixels = ((pixels - mean) / std).to(device, dtype)
        tokens = self.tokenizer([self.prompt], padding=True, truncation=True, return_tensors="pt").to(device)
        out = self.model(**tokens, pixel_values=pixels)  # projected embeddings of both towers
        return F.cosine_similarity(out.image_embeds.float(), out.text_embeds.float(), dim=-1).cpu()


@lru_cache(maxsize=2)
def load_clip(source: str, device: str) -> tuple[Any, Any]:
    """A CLIP model and tokenizer from a local folder or a hub id, weights from safetensors only."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(source, use_safetensors=True).to(device).eval()
    return model, CLIPTokenizer.from_pretrained(source)


# ---------------------------------------------------------------------------------------------- nodes

PROMPT_DESCRIPTION = "The prompt the images are scored against (wire the same String as the Prompt node's text)."


@node("PromptAdherenceVerifier", category="scaling", outputs=[Output("verifier", SocketType.VERIFIER)])
class PromptAdherenceVerifierNode(Node):
    """Scores images of the embedded model by how many of the prompt's colour, shape, size and background
    words the shapes analyzer reads in them."""

    class Params(NodeParams):
        prompt: str = Field("a red circle on a blue background", max_length=1000, description=PROMPT_DESCRIPTION)

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if not read_prompt(params.prompt).named:
            return [("prompt", "names no colour, shape or size the embedded model knows: nothing to verify")]
        return []

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return {"verifier": AdherenceVerifier(params.prompt)}


@node("ClipVerifier", category="scaling", outputs=[Output("verifier", SocketType.VERIFIER)])
class ClipVerifierNode(Node):
    """Scores images by CLIP score against the prompt (a CLIP from a local folder or the hub)."""

    class Params(NodeParams):
        source: str = Field(
            "openai/clip-vit-large-patch14",
            min_length=1,
            max_length=4096,
            description="A CLIP model: a local diffusers/transformers folder or a hub id (safetensors weights).",
            json_schema_extra={"reads": "model"},
        )
        prompt: str = Field("a red circle on a blue background", max_length=1000, description=PROMPT_DESCRIPTION)

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        ctx.check_model_source(params.source, field="source")
        try:
            model, tokenizer = load_clip(params.source, ctx.device)
        except (OSError, ValueError) as error:
            raise NodeError(f"cannot load a CLIP model from {params.source!r}: {error}", field="source") from None
        return {"verifier": ClipVerifier(model, tokenizer, params.prompt, params.source)}
