"""Aggregation: strategy weights, state-dict averaging and the FedProx penalty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mucald_unet.federation.aggregation import (
    CausalInvariantFusion,
    ClientReport,
    FedAvgBySamples,
    FedAvgEqual,
    fedprox_penalty,
    strategy_from_name,
    weighted_average,
)


def _check_simplex(w: np.ndarray, n: int) -> None:
    assert w.dtype == np.float64 and w.shape == (n,)
    assert np.all(w >= 0) and math.isclose(float(w.sum()), 1.0, rel_tol=0, abs_tol=1e-12)


# --- strategies ---------------------------------------------------------------------------------

def test_equal_weights_ignore_everything_but_the_count():
    reports = [ClientReport("a", 1, 0.1, 1.0), ClientReport("b", 500), ClientReport("c", 7)]
    w = FedAvgEqual().weights(reports)
    _check_simplex(w, 3)
    np.testing.assert_allclose(w, [1 / 3] * 3)


def test_sample_weights_are_proportional_to_num_samples():
    w = FedAvgBySamples().weights([ClientReport("a", 10), ClientReport("b", 30), ClientReport("c", 0)])
    _check_simplex(w, 3)
    np.testing.assert_allclose(w, [0.25, 0.75, 0.0])


def test_sample_weights_need_some_samples():
    with pytest.raises(ValueError, match="num_samples > 0"):
        FedAvgBySamples().weights([ClientReport("a", 0), ClientReport("b", 0)])


def test_causal_fusion_without_binding_floor():
    # raw: a = (1/0.5)*(30/1.5) = 40, b = (1/1)*(10/1) = 10 -> 0.8, 0.2 (floor 0.125 does not bind)
    # blend 0.5: 0.5*0.8 + 0.25 = 0.65, 0.5*0.2 + 0.25 = 0.35
    reports = [ClientReport("a", 30, proxy_mse=0.5, val_loss=1.5), ClientReport("b", 10, 1.0, 1.0)]
    w = CausalInvariantFusion().weights(reports)
    _check_simplex(w, 2)
    np.testing.assert_allclose(w, [0.65, 0.35], rtol=0, atol=1e-12)


def test_causal_fusion_floor_then_blend():
    # raw: a = 10*100 = 1000, b = 1*100 = 100, c = 1*(100/10) = 10; normalised 100/111, 10/111,
    # 1/111. c is lifted to the floor 0.25/3 = 1/12; renormalising by 110/111 + 1/12 = 1431/1332
    # gives 1200/1431, 120/1431, 111/1431; blending 50/50 with 1/3 adds 1/6 to half of each.
    reports = [ClientReport("a", 100, 0.1, 1.0), ClientReport("b", 100, 1.0, 1.0),
               ClientReport("c", 100, 1.0, 10.0)]
    w = CausalInvariantFusion().weights(reports)
    _check_simplex(w, 3)
    expected = [0.5 * 1200 / 1431 + 1 / 6, 0.5 * 120 / 1431 + 1 / 6, 0.5 * 111 / 1431 + 1 / 6]
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)


def test_causal_fusion_without_blend_keeps_every_client_at_the_floor_or_above():
    reports = [ClientReport("a", 100, 0.1, 1.0), ClientReport("b", 100, 1.0, 1.0),
               ClientReport("c", 100, 1.0, 10.0)]
    w = CausalInvariantFusion(floor=0.25, blend=1.0).weights(reports)
    np.testing.assert_allclose(w, [1200 / 1431, 120 / 1431, 111 / 1431], rtol=0, atol=1e-12)
    assert w.min() >= 0.25 / 3 * (1332 / 1431) - 1e-12  # floor, shrunk only by renormalising


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_causal_fusion_falls_back_to_equal_on_unusable_signals(bad):
    for reports in ([ClientReport("a", 10, bad, 1.0), ClientReport("b", 30, 0.5, 1.0)],
                    [ClientReport("a", 10, 0.5, 1.0), ClientReport("b", 30, 0.5, bad)]):
        np.testing.assert_allclose(CausalInvariantFusion().weights(reports), [0.5, 0.5])


def test_causal_fusion_defaults_fall_back_when_no_crdm_reports_proxies():
    w = CausalInvariantFusion().weights([ClientReport("a", 10), ClientReport("b", 90)])
    np.testing.assert_allclose(w, [0.5, 0.5])


def test_causal_fusion_guards_tiny_denominators():
    w = CausalInvariantFusion().weights([ClientReport("a", 10, 1e-300, 1e-300), ClientReport("b", 10, 1.0, 1.0)])
    _check_simplex(w, 2)
    assert np.all(np.isfinite(w))


def test_causal_fusion_validates_settings():
    with pytest.raises(ValueError, match="floor"):
        CausalInvariantFusion(floor=1.5)
    with pytest.raises(ValueError, match="blend"):
        CausalInvariantFusion(blend=-0.1)


def test_strategies_reject_empty_or_negative_reports():
    for strategy in (FedAvgEqual(), FedAvgBySamples(), CausalInvariantFusion()):
        with pytest.raises(ValueError, match="zero client reports"):
            strategy.weights([])
        with pytest.raises(ValueError, match="num_samples"):
            strategy.weights([ClientReport("a", -1)])


def test_strategy_from_name():
    assert isinstance(strategy_from_name("equal"), FedAvgEqual)
    assert isinstance(strategy_from_name("samples"), FedAvgBySamples)
    causal = strategy_from_name("causal")
    assert isinstance(causal, CausalInvariantFusion) and causal.name == "causal"
    assert (causal.floor, causal.blend) == (0.25, 0.5)
    with pytest.raises(ValueError, match="causal, equal, samples"):
        strategy_from_name("fedavg")


# --- weighted_average ---------------------------------------------------------------------------

def _state(scale: float, steps: int) -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([1.0, 2.0, 3.0]) * scale,
        "h": (torch.tensor([[1.0, -1.0]]) * scale).to(torch.float16),
        "steps": torch.tensor(steps, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
    }


def test_weighted_average_values_and_dtypes():
    a, b = _state(1.0, steps=7), _state(3.0, steps=9)
    out = weighted_average([a, b], [0.25, 0.75])
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0, 7.5]))
    assert out["w"].dtype == torch.float32
    assert out["h"].dtype == torch.float16
    torch.testing.assert_close(out["h"], torch.tensor([[2.5, -2.5]], dtype=torch.float16))
    assert out["steps"].dtype == torch.int64 and int(out["steps"]) == 7  # from the first state
    assert torch.equal(out["mask"], a["mask"])


def test_weighted_average_normalises_weights():
    a, b = _state(1.0, 0), _state(3.0, 0)
    torch.testing.assert_close(weighted_average([a, b], [1, 3])["w"],
                               weighted_average([a, b], [0.25, 0.75])["w"])


def test_weighted_average_returns_new_tensors():
    a, b = _state(1.0, 1), _state(1.0, 1)
    out = weighted_average([a, b], [0.5, 0.5])
    for key in a:
        assert out[key].data_ptr() not in (a[key].data_ptr(), b[key].data_ptr())
    out["steps"] += 5
    out["w"].zero_()
    assert int(a["steps"]) == 1 and a["w"][0] == 1.0


def test_weighted_average_of_identical_states_is_identity():
    state = {"conv.weight": torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)),
             "norm.bias": torch.randn(4, dtype=torch.float64)}
    out = weighted_average([state, state, state], [0.2, 0.3, 0.5])
    for key, value in state.items():
        assert out[key].dtype == value.dtype and torch.equal(out[key], value)


def test_weighted_average_detaches_parameters():
    p = torch.nn.Parameter(torch.ones(2))
    out = weighted_average([{"p": p}], [1.0])
    assert not out["p"].requires_grad


def test_weighted_average_key_mismatch_names_the_key():
    a, b = _state(1.0, 0), _state(1.0, 0)
    del b["h"]
    with pytest.raises(ValueError, match="'h'"):
        weighted_average([a, b], [0.5, 0.5])
    c = dict(_state(1.0, 0), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="'extra'"):
        weighted_average([a, c], [0.5, 0.5])


def test_weighted_average_shape_mismatch_names_the_key():
    a, b = _state(1.0, 0), _state(1.0, 0)
    b["w"] = torch.zeros(4)
    with pytest.raises(ValueError, match="'w'.*shape"):
        weighted_average([a, b], [0.5, 0.5])


def test_weighted_average_rejects_bad_weights():
    a = _state(1.0, 0)
    with pytest.raises(ValueError, match="2 weights"):
        weighted_average([a], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average([a, a], [1.5, -0.5])
    with pytest.raises(ValueError, match="sum to zero"):
        weighted_average([a, a], [0.0, 0.0])


# --- fedprox_penalty ----------------------------------------------------------------------------

def _linear() -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5]))
    return layer


def test_fedprox_value_and_gradient():
    layer = _linear()
    reference = {"weight": torch.tensor([[0.0, 0.0]], requires_grad=True), "bias": torch.tensor([1.5])}
    penalty = fedprox_penalty(layer, reference, mu=0.1)
    # ||p - ref||^2 = 1 + 4 + 1 = 6 -> 0.5 * 0.1 * 6 = 0.3
    assert penalty.dim() == 0
    assert math.isclose(float(penalty.detach()), 0.3, rel_tol=1e-6)
    penalty.backward()
    torch.testing.assert_close(layer.weight.grad, 0.1 * torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(layer.bias.grad, 0.1 * torch.tensor([-1.0]))
    assert reference["weight"].grad is None  # the reference is detached


def test_fedprox_with_zero_mu_is_a_graph_free_zero():
    layer = _linear()
    reference = {k: v.detach().clone() + 1 for k, v in layer.state_dict().items()}
    penalty = fedprox_penalty(layer, reference, mu=0.0)
    assert penalty.dim() == 0 and float(penalty) == 0.0 and not penalty.requires_grad
    loss = layer(torch.ones(1, 2)).sum() + penalty
    loss.backward()  # adding the zero does not disturb the real graph
    torch.testing.assert_close(layer.bias.grad, torch.tensor([1.0]))


def test_fedprox_rejects_missing_reference_and_negative_mu():
    layer = _linear()
    with pytest.raises(ValueError, match="'bias'"):
        fedprox_penalty(layer, {"weight": torch.zeros(1, 2)}, mu=0.1)
    with pytest.raises(ValueError, match="mu"):
        fedprox_penalty(layer, layer.state_dict(), mu=-1.0)
