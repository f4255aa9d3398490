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
    gain = schedule.noise_gain(t).view(-1)
    torch.testing.assert_close(gain, torch.sqrt((1 - a_bar.double()) / a_bar.double()).view(-1))


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
    at_eval = NoiseSchedule(DiffusionPlan(num_train_timesteps=400, eval_timestep=150), train_at_eval=True)
    assert torch.equal(at_eval.sample_timesteps(64, torch.device("cpu")), torch.full((64,), 150))


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


class Recorder:
    """Wraps a submodule's forward and keeps its last inputs and output."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inner, self.inputs, self.output = module.forward, None, None
        module.forward = self

    def __call__(self, *args):
        self.inputs, self.output = args, self.inner(*args)
        return self.output


@pytest.mark.parametrize("training", [True, False])
def test_what_travels_is_x0_hat_in_closed_form(training: bool) -> None:
    module = split_module().train(training)
    denoiser = Recorder(module.denoiser)
    x = torch.randn(2, 8, 16, 20)
    result = module(x, noise_generator=torch.Generator().manual_seed(4))
    features = result.features
    x_t, t, _ = denoiser.inputs
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # the noise the module drew
    a_bar = module.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t.double(), a_bar.sqrt() * x.double() + (1 - a_bar).sqrt() * eps.double(),
                               atol=1e-5, rtol=0)
    closed = (x_t.double() - (1 - a_bar).sqrt() * denoiser.output.double()) / a_bar.sqrt()
    torch.testing.assert_close(features.double(), closed, atol=1e-5, rtol=0)
    if training:  # the diffusion loss is the eps-MSE of exactly this prediction
        expected = float(((denoiser.output.detach() - eps) ** 2).mean())
        assert float(result.losses["diffusion"].detach()) == pytest.approx(expected, rel=1e-6)
    else:
        assert torch.equal(t, torch.full((2,), module.schedule.eval_timestep))
    residual = (features - x).detach().abs().max()  # the residual noise is the denoiser's error x the bounded gain
    bound = module.schedule.noise_gain(t).max() * (eps - denoiser.output).detach().abs().max()
    assert float(residual) <= float(bound) * (1 + 1e-5) + 1e-6


def test_noise_gain_stays_within_the_bound_over_every_training_draw() -> None:
    module = split_module().train()
    torch.manual_seed(5)
    gains = module.schedule.noise_gain(module.schedule.sample_timesteps(4000, torch.device("cpu")))
    eval_gain = float(module.schedule.noise_gain(torch.tensor([module.schedule.eval_timestep])))
    assert float(gains.max()) <= eval_gain * (1 + 1e-9)  # training never noisier than evaluation
    assert float(gains.max()) == pytest.approx(eval_gain, rel=0.02)  # and reaches the top of the range


def test_the_denoiser_learns_the_noise_of_a_fixed_input() -> None:
    """Fixed x, eps and t: a denoiser whose loss has the wrong target, a detached output or no
    gradient cannot lower its eps-MSE; a working one halves it within a few dozen steps."""
    module = split_module().train()
    x = torch.randn(2, 8, 16, 16)
    optimiser = torch.optim.Adam(module.denoiser.parameters(), lr=1e-2)

    def diffusion_loss() -> torch.Tensor:
        torch.manual_seed(7)  # the same timesteps and u every time
        return module(x, noise_generator=torch.Generator().manual_seed(8)).losses["diffusion"]

    before = float(diffusion_loss().detach())
    for _ in range(40):
        loss = diffusion_loss()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = float(diffusion_loss().detach())
    assert before > 0.5 and after < 0.5 * before, (before, after)


def test_kl_of_a_standard_normal_posterior_is_zero() -> None:
    zeros = torch.zeros(6, 4)
    assert float(gaussian_kl(zeros, zeros)) == 0.0
    mu, logvar = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, -0.2]])
    expected = 0.5 * float(((logvar.exp() + mu ** 2 - 1 - logvar)).sum())
    assert float(gaussian_kl(mu, logvar)) == pytest.approx(expected, rel=1e-6)


def test_proxy_loss_is_the_masked_mse_of_the_node_means() -> None:
    torch.manual_seed(1)
    module = split_module().train()
    scm = Recorder(module.scm)
    x = torch.randn(2, 8, 16, 16)
    proxies = torch.tensor([[1.0, 2.0, -0.5, 3.0], [0.5, -1.0, 0.25, 1.5]])
    mask = torch.tensor([[True, False, True, False], [True, True, False, False]])
    torch.manual_seed(2)
    loss = module(x, proxies, mask).losses["proxy"]
    node_means = scm.output.detach().view(2, 4, 1).mean(dim=2)
    expected = ((node_means - proxies) ** 2)[mask].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6, abs=1e-7)
    junk = torch.where(mask, proxies, torch.full_like(proxies, 1e6))  # masked values must not count
    torch.manual_seed(2)
    assert float(module(x, junk, mask).losses["proxy"]) == pytest.approx(float(loss), rel=1e-6, abs=1e-7)
    torch.manual_seed(2)
    nothing = module(x, proxies, torch.zeros_like(mask))
    assert float(nothing.losses["proxy"]) == 0.0  # nothing to supervise
    nothing.losses["diffusion"].backward()
    assert float(module.denoiser.up.weight.grad.abs().sum()) > 0


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
    denoiser = Recorder(quiet.denoiser)
    x = torch.randn(2, 8, 16, 16)
    out = quiet(x, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
    x_t, t, _ = denoiser.inputs
    a_bar = quiet.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, a_bar.sqrt() * x)  # eps = 0: x_t is the scaled clean map
    eps_pred = denoiser.output.detach()
    assert float(out.losses["diffusion"]) == pytest.approx(float((eps_pred ** 2).mean()), rel=1e-6)
    gain = quiet.schedule.noise_gain(t).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(out.features, x - gain * eps_pred, atol=1e-5, rtol=0)
    plain = split_module(diffusion=False).train()
    result = plain(x, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert plain.denoiser is None and torch.equal(result.features, x) and "diffusion" not in result.losses


def test_shared_state_is_exactly_the_exogenous_encoder_and_the_denoiser() -> None:
    module = split_module()
    roots = {key.split(".")[0] for key in module.shared_state()}
    assert roots == {"exogenous", "denoiser"}
    assert {key.split(".")[0] for key in module.state_dict()} - roots == {"scm", "prior"}
    personal = split_module(share_exogenous=False)
    assert {key.split(".")[0] for key in personal.shared_state()} == {"denoiser"}
