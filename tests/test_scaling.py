"""Inference-time scaling (docs/algorithms.md, "Inference-time scaling"): the prompt reader against every way
captions are written, the verifiers, the linear and VP paths and the SDE in closed form, and the particle
sampler's methods on tiny SD3 and FLUX models (budget never passed, counted by a wrapped model; determinism per
seed) and on the embedded model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.embedded import captions, dataset
from nodes.embedded.captions import KNOWN_WORDS
from nodes.models.components import Latent
from nodes.models.loader import MANAGER, LoadOptions
from nodes.registry import NodeContext, NodeError
from nodes.sampling.sampler import NoiseSource, Sampler
from nodes.sampling.solvers import EULER, HEUN, MIDPOINT
from nodes.scaling.particles import (
    BudgetExceeded,
    CountedVelocity,
    ParticleSampler,
    Path,
    adaptive_times,
    estimate,
    step,
)
from nodes.scaling.verifiers import AdherenceVerifier, ClipVerifierNode, PromptAdherenceVerifierNode, read_prompt
from tests.tiny_models import saved_tiny_clip, saved_tiny_model

# ---------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("held_out", [False, True], ids=["training phrasings", "held-out phrasings"])
def test_the_prompt_reader_finds_exactly_what_every_generated_caption_names(held_out: bool):
    rng = np.random.default_rng(7)
    for _ in range(3000):
        scene = dataset.sample_training_scene(rng)
        caption = captions.describe(scene, rng, held_out=held_out)
        expected = {name: getattr(scene, name) for name in caption.named}
        assert read_prompt(caption.text).named == expected, caption


def test_the_prompt_reader_takes_synonyms_plurals_and_leaves_unknown_words():
    assert read_prompt("Two BIG violet hearts over gray!").named == {
        "size": "large",
        "colour": "purple",
        "shape": "heart",
        "background": "grey",
    }
    assert read_prompt("a pink hexagon").named == {}
    assert KNOWN_WORDS["tiny"] == ("size", "small")


# ---------------------------------------------------------------------------------------------- verifiers


def rendered(scene: dataset.Scene) -> torch.Tensor:
    return torch.from_numpy(np.asarray(dataset.render(scene), dtype=np.float32) / 255).permute(2, 0, 1)


def test_prompt_adherence_scores_a_matching_image_above_each_kind_of_mismatch():
    scene = dataset.Scene("circle", "red", "blue", "large", (32.0, 32.0), 22.0)
    images = torch.stack([rendered(scene), torch.full((3, 64, 64), 0.0) + torch.tensor([0, 0, 1.0]).view(3, 1, 1)])
    verifier = AdherenceVerifier("a large red circle on a blue background")
    matching, empty = verifier.score(images).tolist()
    assert matching > 0.9 and empty == 0.0
    for wrong in ("a large green circle on a blue background", "a large red square on a blue background"):
        assert AdherenceVerifier(wrong).score(images[:1]).item() < 0.8 < matching


def test_the_adherence_node_refuses_a_prompt_it_cannot_verify():
    assert PromptAdherenceVerifierNode.check(PromptAdherenceVerifierNode.Params(prompt="a red circle")) == []
    [(field, message)] = PromptAdherenceVerifierNode.check(PromptAdherenceVerifierNode.Params(prompt="a photo"))
    assert field == "prompt" and "nothing to verify" in message


def test_the_clip_verifier_scores_through_a_tiny_clip_and_stays_confined(tmp_path):
    folder = saved_tiny_clip(tmp_path / "clip")
    ctx = NodeContext(node_id="v", node_type="ClipVerifier", device="cpu")
    params = ClipVerifierNode.Params(source=str(folder), prompt="a red circle on a blue background")
    verifier = ClipVerifierNode().run(ctx, params)["verifier"]
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    scores = verifier.score(images)
    assert scores.shape == (3,) and bool(((scores >= -1) & (scores <= 1)).all())
    assert torch.equal(verifier.score(images), scores) and len(set(scores.tolist())) == 3
    confined = NodeContext(node_id="v", node_type="ClipVerifier", device="cpu", file_roots=(tmp_path / "data",))
    with pytest.raises(NodeError) as refused:
        ClipVerifierNode().run(confined, params)
    assert refused.value.field == "source"


# ---------------------------------------------------------------------------------------------- paths and SDE


def test_the_vp_path_is_variance_preserving_with_its_derivatives_and_the_linear_path_is_the_models_own():
    vp, linear = Path("vp"), Path("linear")
    for r in (0.05, 0.3, 0.6, 0.9, 1.0):
        a, b, da, db = vp.coefficients(r)
        assert a * a + b * b == pytest.approx(1.0)
        h = 1e-6
        (a1, b1, _, _), (a0, b0, _, _) = vp.coefficients(r + h), vp.coefficients(r - h)
        assert da == pytest.approx((a1 - a0) / (2 * h), rel=1e-4) and db == pytest.approx((b1 - b0) / (2 * h), rel=1e-4)
        t, s = vp.model_time(r)
        assert s * (1 - t) == pytest.approx(a) and s * t == pytest.approx(b), "same signal and noise as the VP path"
        assert linear.model_time(r) == (pytest.approx(r), pytest.approx(1.0))


def gaussian_velocity(mean: float, std: float):
    """The exact velocity of the linear path when the data are N(mean, std²): v = E[ε − x0 | x_t]."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = float(sigma)
        variance = (1 - t) ** 2 * std**2 + t**2
        x0 = mean + (1 - t) * std**2 / variance * (x - (1 - t) * mean)
        return (x - (1 - t) * x0) / t - x0

    return velocity


@pytest.mark.parametrize("kind,norm", [("linear", 0.0), ("linear", 3.0), ("vp", 0.0), ("vp", 3.0)])
def test_ode_and_sde_on_either_path_land_on_the_data_distribution(kind: str, norm: float):
    """With the exact velocity of Gaussian data, every sampler must return that Gaussian: a check of the
    score, the drift, the diffusion and the VP conversion together."""
    path, generator = Path(kind), torch.Generator().manual_seed(0)
    times = [1.0 - k / 200 for k in range(201)]
    velocity = gaussian_velocity(mean=1.5, std=0.5)
    x = torch.randn(20_000, 1, generator=generator)
    for k in range(200):
        found = estimate(velocity, path, x, times[k])
        if k + 1 < 200:
            x = step(path, x, found, times[k], times[k + 1], norm, generator)
    assert float(found.x0.mean()) == pytest.approx(1.5, abs=0.03)
    assert float(found.x0.std()) == pytest.approx(0.5, rel=0.05)


def test_the_adaptive_grid_over_a_linear_schedule_is_the_papers():
    linear = [1 - k / 10 for k in range(11)]
    expected = [1, 0.995, 0.980, 0.954, 0.917, 0.866, 0.800, 0.714, 0.600, 0.436, 0]
    assert adaptive_times(linear) == pytest.approx(expected, abs=1e-3)


def test_a_counted_velocity_refuses_to_pass_its_budget():
    counted = CountedVelocity(lambda x, s: x, budget=5)
    counted(torch.zeros(3, 1), torch.tensor(1.0))
    with pytest.raises(BudgetExceeded):
        counted(torch.zeros(3, 1), torch.tensor(1.0))
    assert counted.used == 3 and counted.left == 2


# ---------------------------------------------------------------------------------------------- the node


class CountingModel:
    """A model wrapper counting guided-velocity rows, the NFE the sampler must keep within its budget."""

    def __init__(self, model) -> None:
        self.model = model
        self.rows = 0

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def velocity(self, x, *args, **kwargs):
        self.rows += x.shape[0]
        return self.model.velocity(x, *args, **kwargs)


class MeanBrightness:
    """A verifier that prefers bright images (any scorer fits the socket)."""

    description = "mean brightness"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(1, 2, 3))


def particle_run(
    loaded,
    *,
    seed: int = 0,
    steps: int = 6,
    verifier=None,
    size=(32, 32),
    batch=1,
    negative=True,
    solver=None,
    warnings=None,
    **params,
):
    model = CountingModel(loaded.model)
    encode = loaded.text_encoder.encode
    previews: list[tuple[int, int]] = []
    ctx = NodeContext(
        node_id="p", node_type="ParticleSampler", device="cpu", on_progress=lambda d, t, _: previews.append((d, t))
    )
    latent = Latent(torch.zeros(loaded.model.latent_shape(batch, *size)), loaded.model.family)
    out = ParticleSampler().run(
        ctx,
        ParticleSampler.Params(**params),
        model=model,
        positive=encode(["a red circle"]).repeat_to(batch),
        negative=encode([""]).repeat_to(batch) if negative else None,
        latent=latent,
        sigmas=loaded.model.default_sigmas(steps, *size),
        noise=NoiseSource(seed),
        vae=loaded.vae,
        verifier=verifier or MeanBrightness(),
        solver=solver,
    )["latent"]
    if warnings is not None:
        warnings += ctx.records["warnings"].get("p", [])
    return out.samples, model.rows, previews


@pytest.fixture(scope="module", params=["sd3", "flux"])
def tiny(request, tmp_path_factory):
    folder = saved_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    yield MANAGER.get(str(folder), LoadOptions(device="cpu"))
    MANAGER.free()


METHODS = [
    ("best_of_n", "linear", False),
    ("best_of_n", "vp", True),
    ("particle_filter", "linear", True),
    ("particle_filter", "vp", True),
    ("rbf", "linear", True),
    ("rbf", "vp", True),
]


@pytest.mark.parametrize("method,path,sde", METHODS)
def test_every_method_keeps_within_its_budget_and_repeats_per_seed(tiny, method: str, path: str, sde: bool):
    params = {
        "method": method,
        "path": path,
        "process": "sde" if sde else "ode",
        "nfe_budget": 37,
        "guidance": 1.0,
        "chains": 2,
    }
    samples, used, previews = particle_run(tiny, **params)
    assert samples.shape == tiny.model.latent_shape(1, 32, 32) and torch.isfinite(samples).all()
    assert used <= 37 and used >= 37 - 6, "the budget is spent, never passed"
    assert previews and previews[-1][1] == 37 and all(done <= 37 for done, _ in previews)
    again, _, _ = particle_run(tiny, **params)
    assert torch.equal(again, samples)
    other, _, _ = particle_run(tiny, seed=1, **params)
    assert not torch.equal(other, samples)


@pytest.mark.parametrize("solver", [None, HEUN, MIDPOINT], ids=["unwired (Euler)", "heun", "midpoint"])
def test_best_of_one_on_the_linear_ode_is_the_sampler_with_the_same_solver(tiny, solver):
    """One particle, no noise, the model's own path: the Sampler's result for that seed and solver (Euler when
    none is wired), one sample's evaluations spent."""
    evaluations = (solver or EULER).evaluations(6)
    searched, used, _ = particle_run(
        tiny,
        method="best_of_n",
        path="linear",
        process="ode",
        time_grid="schedule",
        nfe_budget=evaluations,
        guidance=1.0,
        solver=solver,
    )
    encode = tiny.text_encoder.encode
    plain = (
        Sampler()
        .run(
            NodeContext(node_id="s", node_type="Sampler", device="cpu"),
            Sampler.Params(guidance=1.0),
            model=tiny.model,
            positive=encode(["a red circle"]),
            latent=Latent(torch.zeros(tiny.model.latent_shape(1, 32, 32)), tiny.model.family),
            sigmas=tiny.model.default_sigmas(6, 32, 32),
            solver=solver or EULER,
            noise=NoiseSource(0),
        )["latent"]
        .samples
    )
    assert used == evaluations
    torch.testing.assert_close(searched, plain, rtol=1e-5, atol=1e-5)


def test_a_wired_solver_sets_how_many_samples_the_budget_buys_and_elsewhere_is_reported_unused(tiny):
    ode = {"method": "best_of_n", "path": "linear", "process": "ode", "time_grid": "schedule", "guidance": 1.0}
    _, used, _ = particle_run(tiny, nfe_budget=37, solver=HEUN, **ode)
    assert used == 3 * HEUN.evaluations(6), "three Heun samples of 11 evaluations"
    warnings: list[dict] = []
    particle_run(tiny, method="rbf", nfe_budget=30, guidance=1.0, solver=HEUN, warnings=warnings)
    [warning] = warnings
    assert warning["field"] == "solver" and "not used" in warning["message"]


def test_particles_held_at_once_count_against_the_pixel_budget(tiny, monkeypatch):
    monkeypatch.setenv("FLOWCANVAS_MAX_PIXELS", str(5 * 32 * 32))
    particle_run(tiny, method="best_of_n", process="ode", nfe_budget=30, guidance=1.0)  # 5 particles of 32²
    with pytest.raises(NodeError, match="6 particles at once: 32×32 px × 6") as refused:
        particle_run(tiny, method="best_of_n", process="ode", nfe_budget=36, guidance=1.0)
    assert refused.value.field == "nfe_budget"


def test_blank_fields_take_the_models_defaults(tiny):
    """SD3 and FLUX take the paper's settings (RBF on the VP SDE, g = 3r², the adaptive grid)."""
    blank, used, _ = particle_run(tiny, nfe_budget=40, guidance=1.0)
    explicit, _, _ = particle_run(
        tiny,
        method="rbf",
        path="vp",
        process="sde",
        diffusion_norm=3.0,
        time_grid="adaptive",
        nfe_budget=40,
        guidance=1.0,
    )
    assert torch.equal(blank, explicit) and used <= 40


def test_a_batch_spends_the_budget_per_image(tiny):
    samples, used, previews = particle_run(tiny, method="rbf", nfe_budget=30, guidance=1.0, batch=2)
    assert samples.shape[0] == 2 and used <= 60 and previews[-1][1] == 60


def test_sd3_guidance_without_the_negative_is_refused(tiny):
    if tiny.model.family == "sd3":
        with pytest.raises(NodeError, match="needs the negative conditioning") as refused:
            particle_run(tiny, method="best_of_n", nfe_budget=6, guidance=7.0, negative=False)
        assert refused.value.field == "negative"
    else:  # FLUX's embedded guidance needs no negative
        particle_run(tiny, method="best_of_n", nfe_budget=6, guidance=7.0, negative=False)


def test_too_small_a_budget_or_a_bad_schedule_is_a_node_error(tiny):
    with pytest.raises(NodeError) as small:
        particle_run(tiny, method="best_of_n", nfe_budget=5, steps=6, guidance=1.0)
    assert small.value.field == "nfe_budget" and "less than one sample" in str(small.value)
    [(field, _)] = ParticleSampler.check(ParticleSampler.Params(method="rbf", process="ode"))
    assert field == "process"
    assert ParticleSampler.check(ParticleSampler.Params(method="rbf")) == [], "blank: the model's default, sde"


# ---------------------------------------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def embedded():
    yield MANAGER.get("embedded:shapes", LoadOptions(device="cpu"))
    MANAGER.free()


def test_on_the_embedded_model_best_of_n_never_scores_below_the_plain_sample(embedded):
    """Best-of-N on the ODE keeps the plain sample (particle 0 is the same seed's noise) among its choices."""
    prompt = "a small yellow star on a black background"
    verifier = AdherenceVerifier(prompt)

    def adherence(latent: torch.Tensor) -> float:
        return float(verifier.score(embedded.vae.decode(latent)))

    ode = {"steps": 10, "size": (64, 64), "method": "best_of_n", "path": "linear", "process": "ode"}
    for seed in range(3):
        plain, _, _ = particle_run(embedded, seed=seed, nfe_budget=10, verifier=verifier, **ode)
        searched, used, _ = particle_run(embedded, seed=seed, nfe_budget=80, verifier=verifier, **ode)
        assert used == 80 and adherence(searched) >= adherence(plain) - 1e-6
    assert math.isfinite(adherence(searched))
