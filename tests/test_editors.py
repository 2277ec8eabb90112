"""FlowEdit, SplitFlow, FlowOpt and Decompose Prompt: the invariants and closed forms of docs/algorithms.md ("FlowEdit", "SplitFlow and Decompose Prompt", "FlowOpt"),
and runs on tiny SD3 and FLUX models (shapes, packing, dtypes, determinism per seed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.editors.common import EditPrompts
from nodes.editors.decompose import decompose_prompt
from nodes.editors.flowedit import flowedit
from nodes.editors.flowopt import fixed_point_iterations, flowopt, uniinv
from nodes.editors.splitflow import aggregate, aggregation_weights, project, splitflow, trajectory_projection
from nodes.models.loader import MANAGER, LoadOptions
from nodes.sampling.solvers import sample_euler
from tests.tiny_models import saved_tiny_model

SOURCE = "a red circle on a blue background"
TARGET = "a green square on a yellow background"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    models = {}
    for family in ("sd3", "flux"):
        folder = saved_tiny_model(family, tmp_path_factory.mktemp(family) / "model")
        models[family] = MANAGER.get(str(folder), LoadOptions(device="cpu"))
    yield models
    MANAGER.free()


def setup(loaded, family: str, source: str = SOURCE, target: str = TARGET, steps: int = 8):
    model = loaded[family]
    x_src = torch.randn(model.model.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(7))
    prompts = EditPrompts(
        model.text_encoder.encode([source]), model.text_encoder.encode([target]), model.text_encoder.encode([""])
    )
    return model.model, x_src, prompts, model.model.default_sigmas(steps, 32, 32)


def generator(seed: int = 42) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- FlowEdit ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowedit_with_the_target_equal_to_the_source_returns_the_source_exactly(loaded, family: str):
    model, x_src, _, sigmas = setup(loaded, family)
    same = EditPrompts(
        loaded[family].text_encoder.encode([SOURCE]),
        loaded[family].text_encoder.encode([SOURCE]),
        loaded[family].text_encoder.encode([""]),
    )
    edited = flowedit(model, x_src, sigmas, same, n_max=8, src_guidance=4.0, tar_guidance=4.0, generator=generator())
    assert torch.equal(edited, x_src)
    moved = flowedit(model, x_src, sigmas, same, n_max=8, src_guidance=2.0, tar_guidance=4.0, generator=generator())
    assert not torch.equal(moved, x_src), "with unequal guidance the edit does move (the invariant is not vacuous)"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowedit_is_deterministic_per_seed_and_keeps_shape_and_dtype(loaded, family: str):
    model, x_src, prompts, sigmas = setup(loaded, family)

    def run(seed: int) -> torch.Tensor:
        return flowedit(
            model,
            x_src,
            sigmas,
            prompts,
            n_max=6,
            n_avg=2,
            src_guidance=1.5,
            tar_guidance=5.0,
            generator=generator(seed),
        )

    first, again, other = run(1), run(1), run(2)
    assert first.shape == x_src.shape and first.dtype == x_src.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, x_src)


def test_flowedit_with_no_active_step_returns_the_source(loaded):
    model, x_src, prompts, sigmas = setup(loaded, "sd3")
    edited = flowedit(
        model, x_src, sigmas, prompts, n_max=0, src_guidance=3.5, tar_guidance=13.5, generator=generator()
    )
    assert torch.equal(edited, x_src) and edited is not x_src


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowedit_with_n_min_equal_to_n_max_is_sdedit_with_one_noise_draw(loaded, family: str):
    model, x_src, prompts, sigmas = setup(loaded, family)
    edited = flowedit(
        model, x_src, sigmas, prompts, n_max=5, n_min=5, src_guidance=1.0, tar_guidance=4.0, generator=generator(3)
    )
    start = len(sigmas) - 1 - 5
    noise = model.noise_like(x_src, generator(3))
    x = sigmas[start] * noise + (1 - sigmas[start]) * x_src
    expected = sample_euler(lambda x, s: model.velocity(x, s, prompts.target, prompts.negative, 4.0), x, sigmas[start:])
    torch.testing.assert_close(edited, expected, rtol=1e-5, atol=1e-6)


def test_flowedit_rejects_n_min_above_n_max(loaded):
    model, x_src, prompts, sigmas = setup(loaded, "sd3")
    with pytest.raises(ValueError, match="n_min"):
        flowedit(model, x_src, sigmas, prompts, n_max=3, n_min=4, src_guidance=1, tar_guidance=1, generator=generator())


def test_flux_editor_noise_is_drawn_packed_as_the_reference_draws_it(loaded):
    model, x_src, _, _ = setup(loaded, "flux")
    packed = torch.randn(model.pack(x_src).shape, generator=generator(5))
    assert torch.equal(model.noise_like(x_src, generator(5)), model.unpack(packed, *x_src.shape[2:]))


def test_batched_velocities_equal_separate_calls(loaded):
    from nodes.models.base import VelocityQuery

    for family in ("sd3", "flux"):
        model, x_src, prompts, _ = setup(loaded, family)
        sigma = torch.tensor(0.6)
        other = x_src.flip(-1)
        batched = model.velocities(
            sigma,
            [
                VelocityQuery(x_src, prompts.source, prompts.negative, 3.0),
                VelocityQuery(other, prompts.target, prompts.negative, 5.0),
            ],
        )
        separate = [
            model.velocity(x_src, sigma, prompts.source, prompts.negative, 3.0),
            model.velocity(other, sigma, prompts.target, prompts.negative, 5.0),
        ]
        for got, expected in zip(batched, separate):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---- SplitFlow ---------------------------------------------------------------------------------------------------


def authors_loop(model, x_src, sigmas, prompts, subs, *, n_max: int, n_dec: int, src: float, tar: float, seed: int):
    """SplitFlow written out as the authors' SplitFlowSD3 loop is ordered (docs/algorithms.md, "SplitFlow"): per step
    T − i ≥ n_dec − 1 one noise draw per prompt (sub-prompts, then the target), LTP after T − i = n_dec, VFA at
    T − i = n_dec − 1 from the sub-prompts only, then FlowEdit with one draw per step."""
    draw = generator(seed)
    steps = len(sigmas) - 1
    flows = [x_src] * (len(subs) + 1)
    conditions = [*subs, prompts.target]
    edited = x_src

    def difference(latent, condition, sigma):
        noise = model.noise_like(x_src, draw)
        z_src = sigma * noise + (1 - sigma) * x_src
        z_tar = z_src + (latent - x_src)
        v_src = model.velocity(z_src, sigma, prompts.source, prompts.negative, src)
        v_tar = model.velocity(z_tar, sigma, condition, prompts.negative, tar)
        return v_tar.float() - v_src.float()

    for i in range(steps - n_max, steps):
        current, sigma, h = steps - i, sigmas[i], sigmas[i + 1] - sigmas[i]
        if current >= n_dec:
            flows = [(x + h * difference(x, c, sigma)).to(x_src.dtype) for x, c in zip(flows, conditions)]
            if current == n_dec:
                d = flows[-1].float()
                unit = d / d.norm(dim=1, keepdim=True).clamp_min(1e-8)
                edited = torch.stack([(x.float() * unit).sum(1, keepdim=True) * unit for x in flows[:-1]]).mean(0)
                edited = edited.to(x_src.dtype)
        elif current == n_dec - 1:
            g = torch.stack([difference(edited, c, sigma) for c in subs])
            unit = g / g.norm(dim=2, keepdim=True).clamp_min(1e-8)
            agreement = torch.einsum("nbchw,mbchw->nmbhw", unit, unit).sum(1) - 1
            weights = torch.softmax(agreement, dim=0).unsqueeze(2)
            edited = (edited + h * (weights * g).sum(0)).to(x_src.dtype)
        else:
            edited = (edited + h * difference(edited, prompts.target, sigma)).to(x_src.dtype)
    return edited


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_splitflow_follows_the_authors_loop_step_for_step(loaded, family: str):
    model, x_src, prompts, sigmas = setup(loaded, family)
    encoder = loaded[family].text_encoder
    subs = [encoder.encode([text]) for text in decompose_prompt(SOURCE, TARGET)]
    assert len(subs) == 3
    expected = authors_loop(model, x_src, sigmas, prompts, subs, n_max=7, n_dec=5, src=2.0, tar=5.0, seed=42)
    got = splitflow(
        model, x_src, sigmas, prompts, subs, n_max=7, n_dec=5, src_guidance=2.0, tar_guidance=5.0, generator=generator()
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_splitflow_is_deterministic_differs_from_flowedit_and_without_a_split_is_flowedit(loaded):
    model, x_src, prompts, sigmas = setup(loaded, "sd3")
    encoder = loaded["sd3"].text_encoder
    subs = [encoder.encode([text]) for text in decompose_prompt(SOURCE, TARGET)]
    options = dict(n_max=7, n_dec=5, src_guidance=2.0, tar_guidance=5.0)
    first = splitflow(model, x_src, sigmas, prompts, subs, generator=generator(), **options)
    again = splitflow(model, x_src, sigmas, prompts, subs, generator=generator(), **options)
    plain = flowedit(model, x_src, sigmas, prompts, n_max=7, src_guidance=2.0, tar_guidance=5.0, generator=generator())
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)
    no_split = splitflow(model, x_src, sigmas, prompts, subs, generator=generator(), **{**options, "n_dec": 9})
    assert torch.equal(no_split, plain), "n_dec above n_max + 1 is FlowEdit"


def test_splitflow_ablation_switches_change_the_result(loaded):
    model, x_src, prompts, sigmas = setup(loaded, "flux")
    encoder = loaded["flux"].text_encoder
    subs = [encoder.encode([text]) for text in decompose_prompt(SOURCE, TARGET)]
    options = dict(n_max=7, n_dec=5, src_guidance=2.0, tar_guidance=5.0)
    variants = [
        splitflow(model, x_src, sigmas, prompts, subs, generator=generator(), **options, **switches)
        for switches in (
            {},
            {"aggregation": "mean"},
            {"aggregation": "distinct"},
            {"projection": False},
        )
    ]
    for k, a in enumerate(variants):
        for b in variants[k + 1 :]:
            assert not torch.equal(a, b)


def test_splitflow_counts_its_model_rows(loaded, monkeypatch: pytest.MonkeyPatch):
    model, x_src, prompts, sigmas = setup(loaded, "sd3")
    encoder = loaded["sd3"].text_encoder
    subs = [encoder.encode([text]) for text in decompose_prompt(SOURCE, TARGET)]
    calls: list[int] = []
    velocities = model.velocities
    monkeypatch.setattr(
        model, "velocities", lambda sigma, queries: calls.append(len(queries)) or velocities(sigma, queries)
    )
    splitflow(
        model, x_src, sigmas, prompts, subs, n_max=7, n_dec=5, src_guidance=2.0, tar_guidance=5.0, generator=generator()
    )
    # T − i = 7, 6, 5: four flows × (source, target); 4: three sub-prompts × 2; 3, 2, 1: FlowEdit's pair.
    assert calls == [8, 8, 8, 6, 2, 2, 2]


def test_vfa_weights_are_uniform_for_orthogonal_flows():
    flows = [torch.eye(3)[k].view(1, 3, 1, 1).expand(1, 3, 2, 2) for k in range(3)]
    weights = aggregation_weights(flows)
    torch.testing.assert_close(weights, torch.full((3, 1, 1, 2, 2), 1 / 3))


def test_vfa_weights_for_two_aligned_flows_and_one_opposite():
    a = torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1, 1)
    weights = aggregation_weights([a, 2 * a, -a]).flatten()
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([0.0, 0.0, -2.0]), 0))


@pytest.mark.parametrize("rule", ["vfa", "mean", "distinct"])
def test_aggregation_weights_sum_to_one_and_the_aggregate_is_their_weighted_sum(rule: str):
    flows = [torch.randn(2, 4, 3, 3, generator=generator(k)) for k in range(3)]
    weights = aggregation_weights(flows, rule)
    torch.testing.assert_close(weights.sum(0), torch.ones(2, 1, 3, 3))
    expected = sum(weights[k] * flows[k] for k in range(3))
    torch.testing.assert_close(aggregate(flows, rule), expected, rtol=1e-5, atol=1e-6)


def test_distinct_weighs_the_odd_flow_out_most_and_vfa_least():
    a = torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1, 1)
    flows = [a, 2 * a, -a]
    assert aggregation_weights(flows, "distinct").flatten().argmax() == 2
    assert aggregation_weights(flows, "vfa").flatten().argmin() == 2
    torch.testing.assert_close(aggregation_weights(flows, "mean").flatten(), torch.full((3,), 1 / 3))


def test_latent_trajectory_projection_per_location():
    direction = torch.tensor([[3.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # location 0: x axis, 1: y axis
    latent = torch.tensor([[1.0, 5.0], [4.0, -3.0]]).T.reshape(1, 2, 1, 2)  # (1, 4) and (5, −3)
    projected = project(latent, direction)
    torch.testing.assert_close(projected[0, :, 0, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(projected[0, :, 0, 1], torch.tensor([0.0, -3.0]))
    assert torch.equal(project(latent, latent), latent), "a latent projected on itself is itself, exactly"
    merged = trajectory_projection([latent, 2 * latent], direction)
    torch.testing.assert_close(merged, 1.5 * projected)


# ---- FlowOpt -----------------------------------------------------------------------------------------------------


def test_flowopt_iteration_on_a_linear_map_equals_the_analytic_iteration():
    a = torch.tensor([[0.9, 0.1], [-0.2, 1.1]])
    y = torch.tensor([1.0, -2.0])
    z0 = torch.tensor([0.5, 0.5])
    outputs = fixed_point_iterations(lambda z: a @ z, z0, y, eta=0.3, iterations=5)
    z = z0.clone()
    for k in range(6):
        torch.testing.assert_close(outputs[k], a @ z)
        z = z - 0.3 * (a @ z - y)
    assert len(outputs) == 6


def test_uniinv_takes_n_max_plus_one_evaluations_at_ascending_levels():
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    calls: list[float] = []

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(round(float(sigma), 6))
        return torch.ones_like(x)

    inverted = uniinv(velocity, torch.zeros(1, 1, 1, 1), sigmas, start=1)
    assert calls == [0.0, 0.25, 0.5, 0.75]
    torch.testing.assert_close(inverted, torch.full((1, 1, 1, 1), 0.75))  # constant v = 1 integrates to σ


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowopt_runs_and_with_no_iterations_returns_one_sampling_of_the_inversion(loaded, family: str):
    model, x_src, prompts, sigmas = setup(loaded, family)
    options = dict(mode="edit", n_max=4, eta=0.01, src_guidance=1.0, tar_guidance=3.0)
    outputs = flowopt(model, x_src, sigmas, prompts, iterations=2, **options)
    assert len(outputs) == 3 and all(o.shape == x_src.shape for o in outputs)
    assert not torch.equal(outputs[0], outputs[2])
    again = flowopt(model, x_src, sigmas, prompts, iterations=2, **options)
    assert all(torch.equal(a, b) for a, b in zip(outputs, again)), "FlowOpt draws no noise: it is deterministic"
    assert torch.equal(flowopt(model, x_src, sigmas, prompts, iterations=0, **options)[0], outputs[0])


# ---- Decompose Prompt --------------------------------------------------------------------------------------------


def test_decompose_makes_one_sub_prompt_per_changed_attribute():
    assert decompose_prompt(
        "a small red circle on a blue background", "a small green square on a yellow background"
    ) == [
        "a small green circle on a blue background",
        "a small red square on a blue background",
        "a small red circle on a yellow background",
    ]


def test_decompose_groups_neighbouring_changes_beyond_the_limit_and_keeps_identical_prompts():
    parts = decompose_prompt("a small red circle on a blue background", "a large green square on a yellow background")
    assert parts == [
        "a large green circle on a blue background",
        "a small red square on a blue background",
        "a small red circle on a yellow background",
    ]
    assert decompose_prompt("a red circle", "a red circle") == ["a red circle"]
    assert decompose_prompt("a cat", "a cat wearing a hat") == ["a cat wearing a hat"]


# ---- nodes -------------------------------------------------------------------------------------------------------


def test_flowedit_node_asks_for_the_negative_when_sd3_guidance_needs_it(loaded):
    from nodes.editors.flowedit import FlowEditNode
    from nodes.models.components import Latent
    from nodes.registry import NodeContext, NodeError

    model, x_src, prompts, sigmas = setup(loaded, "sd3")
    node = FlowEditNode()
    ctx = NodeContext(node_id="edit", node_type="FlowEdit", device="cpu")
    with pytest.raises(NodeError) as error:
        node.run(
            ctx,
            FlowEditNode.Params(),
            model=model,
            source_latent=Latent(x_src, "sd3"),
            source=prompts.source,
            target=prompts.target,
            sigmas=sigmas,
        )
    assert error.value.field == "negative"
    assert FlowEditNode.check(FlowEditNode.Params(n_max=3, n_min=4)) == [
        ("n_min", "n_min (4) must not exceed n_max (3)")
    ]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowedit_makes_one_forward_call_per_step_for_both_flows(loaded, family: str):
    model, x_src, prompts, sigmas = setup(loaded, family)
    batches: list[int] = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        flowedit(model, x_src, sigmas, prompts, n_max=3, src_guidance=2.0, tar_guidance=5.0, generator=generator())
    finally:
        hook.remove()
    rows = 4 if family == "sd3" else 2  # SD3: [uncond, cond] for each flow; FLUX: guidance is embedded
    assert batches == [rows] * 3


def test_decompose_node_can_use_a_local_language_model(tmp_path: Path):
    """A tiny random GPT-2 with a locally built tokenizer stands in for an instruction model (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nodes.editors.decompose import DecomposePrompt
    from nodes.models.tokenizers import build_clip_tokenizer
    from nodes.registry import NodeContext, NodeError

    tokenizer = build_clip_tokenizer([SOURCE, TARGET, "sub prompts one per line"])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=256,
            n_embd=32,
            n_layer=1,
            n_head=2,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    )
    folder = tmp_path / "lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    node, ctx = DecomposePrompt(), NodeContext(node_id="d", node_type="DecomposePrompt", device="cpu")
    params = DecomposePrompt.Params(source_text=SOURCE, target_text=TARGET, language_model=str(folder))
    with pytest.raises(NodeError) as silent:  # this random model writes nothing usable: it must say so clearly
        node.run(ctx, params)
    assert silent.value.field == "language_model" and "no sub-prompts" in str(silent.value)
    with pytest.raises(NodeError) as missing:
        node.run(
            ctx, DecomposePrompt.Params(source_text=SOURCE, target_text=TARGET, language_model=str(tmp_path / "absent"))
        )
    assert missing.value.field == "language_model"


def test_language_model_answers_are_parsed_into_sub_prompts():
    from nodes.editors.decompose import parse_sub_prompts

    answer = "1. a green circle\n\n2) a red square\n- a red circle on yellow\n* one too many"
    assert parse_sub_prompts(answer, 3) == ["a green circle", "a red square", "a red circle on yellow"]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_editors_keep_a_half_precision_model_in_its_dtype(tmp_path: Path, family: str):
    loaded = MANAGER.get(str(saved_tiny_model(family, tmp_path / "model")), LoadOptions(device="cpu", dtype="bf16"))
    model, encoder = loaded.model, loaded.text_encoder
    assert model.dtype == torch.bfloat16
    x_src = torch.randn(model.latent_shape(1, 32, 32), generator=generator(0)).to(torch.bfloat16)
    prompts = EditPrompts(encoder.encode([SOURCE]), encoder.encode([TARGET]), encoder.encode([""]))
    sigmas = model.default_sigmas(4, 32, 32)
    with torch.inference_mode():
        results = [
            flowedit(
                model,
                x_src,
                sigmas,
                prompts,
                n_max=4,
                n_min=1,
                src_guidance=2.0,
                tar_guidance=5.0,
                generator=generator(),
            ),
            splitflow(
                model,
                x_src,
                sigmas,
                prompts,
                [encoder.encode([TARGET]), encoder.encode([SOURCE])],
                n_max=4,
                n_dec=2,
                src_guidance=2.0,
                tar_guidance=5.0,
                generator=generator(),
            ),
            flowopt(
                model,
                x_src,
                sigmas,
                prompts,
                mode="edit",
                n_max=3,
                iterations=1,
                eta=0.01,
                src_guidance=1.0,
                tar_guidance=3.0,
            )[-1],
        ]
    for result in results:
        assert result.dtype == torch.bfloat16 and result.shape == x_src.shape
        assert torch.isfinite(result.float()).all()


def test_decompose_keeps_an_article_with_the_word_it_belongs_to():
    assert decompose_prompt("a large red circle on a blue background", "a large red star on an orange background") == [
        "a large red star on a blue background",
        "a large red circle on an orange background",
    ]


def test_decompose_aligns_equal_length_prompts_by_position():
    assert decompose_prompt("a large purple triangle, red background", "a large cyan square, purple background") == [
        "a large cyan triangle, red background",
        "a large purple square, red background",
        "a large purple triangle, purple background",
    ]
