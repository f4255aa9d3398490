"""CRDM pieces: the noise schedule, the causal latent and the split-point module."""

from __future__ import annotations

import pytest
import torch

from mucald_unet.crdm.causal_latent import NeuralSCM, NodeGraph, gaussian_kl
from mucald_unet.crdm.noise_schedule import NoiseSchedule
from mucald_unet.crdm.split_point import CausalDiffusionSplit, SplitOptions
from mucald_unet.daca.gradient_reversal import reverse_gradient
from planners.plans import CausalGraphPlan, DiffusionPlan


def graph_plan(nodes, parents) -> CausalGraphPlan:
    return CausalGraphPlan(nodes=tuple(nodes), parents={n: tuple(parents.get(n, ())) for n in nodes},
                           edge_weights={}, zscore_mean={n: 0.0 for n in nodes},
                           zscore_std={n: 1.0 for n in nodes}, method="test")


def test_noising_matches_the_closed_form() -> None:
    schedule = NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=200))
    x, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([1, 200, 399])
    a_bar = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    expected = torch.sqrt(a_bar) * x + torch.sqrt(1 - a_bar) * eps
    torch.testing.assert_close(schedule.add_noise(x, eps, t), expected)
    eps_pred = torch.randn_like(eps)  # what the split module sends on: x + gain (eps - eps_pred) ...
    gain = schedule.noise_gain(t).float().view(-1, 1, 1, 1)
    x0_hat = (expected - torch.sqrt(1 - a_bar) * eps_pred) / torch.sqrt(a_bar)  # ... is x0_hat
    torch.testing.assert_close(x + gain * (eps - eps_pred), x0_hat, atol=2e-3, rtol=1e-3)


def test_training_timesteps_stay_where_the_noise_gain_is_bounded() -> None:
    schedule = NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=200))
    assert schedule.max_train_timestep == 200  # default bound: the gain at the eval timestep
    assert float(schedule.noise_gain(torch.tensor([200]))) == pytest.approx(1.02, abs=0.01)
    assert float(schedule.noise_gain(torch.tensor([399]))) > 1000  # what the published code allowed
    drawn = schedule.sample_timesteps(5000, torch.device("cpu"))
    assert int(drawn.min()) >= 1 and int(drawn.max()) <= 200
    wider = NoiseSchedule(DiffusionPlan(), max_noise_gain=3.0)
    assert float(wider.noise_gain(torch.tensor([wider.max_train_timestep]))) <= 3.0 < float(
        wider.noise_gain(torch.tensor([wider.max_train_timestep + 1])))
    with pytest.raises(ValueError, match="eval timestep"):
        NoiseSchedule(DiffusionPlan(), max_noise_gain=0.5)


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    torch.testing.assert_close(y, x)
    (y * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -0.6))


def test_gaussian_kl_is_zero_for_equal_distributions_and_matches_the_formula() -> None:
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    assert float(gaussian_kl(mu, logvar, mu, logvar)) == pytest.approx(0.0, abs=1e-6)
    kl = gaussian_kl(torch.ones(1, 1), torch.zeros(1, 1))  # N(1, 1) vs N(0, 1): 0.5
    assert float(kl) == pytest.approx(0.5)


def test_scm_follows_the_client_graph_and_pads_missing_nodes() -> None:
    torch.manual_seed(0)  # fixed weights: a tiny ReLU MLP can, by chance, be flat around one input
    graph = NodeGraph.from_plan(graph_plan(["size", "shape", "colour"], {"shape": ["size"]}), num_nodes=4)
    assert graph.names[3] == "unused_3" and graph.parents[1] == (0,)
    scm = NeuralSCM(graph, node_dim=1, hidden=16)
    u = torch.randn(2, 4)
    base = scm(u)
    child_moved = u.clone()
    child_moved[:, 1] += 1.0
    parent_moved = u.clone()
    parent_moved[:, 0] += 1.0
    assert torch.equal(scm(child_moved)[:, 0], base[:, 0])  # a child does not cause its parent
    assert not torch.allclose(scm(parent_moved)[:, 1], base[:, 1])  # the parent reaches its child
    assert torch.equal(scm(parent_moved)[:, 2], base[:, 2])  # an unrelated node is untouched
    chain = NeuralSCM(NodeGraph.from_plan(graph_plan(["a", "b", "c"], {"b": ["a"], "c": ["b"]}), 3), 1, 32)
    assert len(chain.levels) == 3
    moved = u[:, :3].clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(chain(moved)[:, 2], chain(u[:, :3])[:, 2])  # a reaches c through b
    with pytest.raises(ValueError, match="cycle"):
        NodeGraph.from_plan(graph_plan(["a", "b"], {"a": ["b"], "b": ["a"]}), num_nodes=2)


def split_module(**options) -> CausalDiffusionSplit:
    torch.manual_seed(0)
    graph = NodeGraph.from_plan(graph_plan(["a", "b", "c", "d"], {"b": ["a"]}), num_nodes=4)
    return CausalDiffusionSplit(2, 8, graph, 1, NoiseSchedule(DiffusionPlan()), SplitOptions(
        denoiser_width=8, denoiser_downsample=(4, 4), **options))


def test_segmentation_gradient_reaches_the_features_with_gain_one() -> None:
    module = split_module().train()
    x = torch.randn(2, 8, 16, 20, requires_grad=True)
    result = module(x)
    assert result.features.shape == x.shape
    assert set(result.losses) == {"diffusion"}  # no proxies: no causal losses
    result.features.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # eps_pred is detached on this path


def test_training_losses_and_masked_proxies() -> None:
    torch.manual_seed(1)
    module = split_module().train()
    x = torch.randn(2, 8, 16, 16)
    proxies = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.5, -1.0, 0.0, 0.0]])
    masked = module(x, proxies, torch.zeros(2, 4, dtype=torch.bool))
    assert set(masked.losses) == {"kl_u", "proxy", "kl_z", "diffusion"}
    assert float(masked.losses["proxy"].detach()) == 0.0  # nothing to supervise
    seen = module(x, proxies, torch.ones(2, 4, dtype=torch.bool))
    assert float(seen.losses["proxy"].detach()) > 0.0
    seen.losses["diffusion"].backward()
    assert module.denoiser.up.weight.grad is not None and module.denoiser.up.weight.grad.abs().sum() > 0


def test_evaluation_noise_is_reproducible_with_a_generator_and_odd_sizes_work() -> None:
    module = split_module().eval()
    x = torch.randn(1, 8, 13, 18)
    first = module(x, noise_generator=torch.Generator().manual_seed(3)).features
    second = module(x, noise_generator=torch.Generator().manual_seed(3)).features
    assert first.shape == x.shape and torch.equal(first, second)
    assert not torch.equal(first, x)  # the eval timestep noises what crosses


def test_without_forward_noise_and_without_diffusion() -> None:
    torch.manual_seed(2)
    quiet = split_module(forward_noise=False).train()
    x = torch.randn(2, 8, 16, 16)
    out = quiet(x, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert float(out.losses["diffusion"].detach()) >= 0.0
    assert torch.allclose(out.features, x, atol=5.0)  # only the (trained-to-zero) residual is removed
    plain = split_module(diffusion=False).train()
    result = plain(x, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert plain.denoiser is None and torch.equal(result.features, x) and "diffusion" not in result.losses


def test_shared_state_is_exactly_the_exogenous_encoder_and_the_denoiser() -> None:
    module = split_module()
    roots = {key.split(".")[0] for key in module.shared_state()}
    assert roots == {"exogenous", "denoiser"}
    assert {key.split(".")[0] for key in module.state_dict()} - roots == {"scm", "prior"}
