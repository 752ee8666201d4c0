"""Pair-study similarity metrics against independent numpy float64 computations, plus their defining properties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hfsoup.study.similarity import (
    OutputSimilarity,
    WeightSimilarity,
    disagreement,
    ensemble_accuracy,
    is_parameter_key,
    linear_cka,
    logit_mse,
    output_similarity,
    symmetric_kl,
    weight_similarity,
)

# ------------------------------------------------------------------------------------------- numpy references


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_symmetric_kl(a: np.ndarray, b: np.ndarray) -> float:
    p, q = np_softmax(a), np_softmax(b)
    total = 0.0
    for i in range(p.shape[0]):
        kl_pq = sum(p[i, k] * (np.log(p[i, k]) - np.log(q[i, k])) for k in range(p.shape[1]))
        kl_qp = sum(q[i, k] * (np.log(q[i, k]) - np.log(p[i, k])) for k in range(p.shape[1]))
        total += 0.5 * (kl_pq + kl_qp)
    return total / p.shape[0]


def np_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(k_, l2):
        return np.trace(k_ @ h @ l2 @ h)

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def _state_dicts(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv.weight": (4, 3, 3, 3), "bn.weight": (4,), "bn.bias": (4,), "fc.weight": (10, 4), "fc.bias": (10,)}
    sd_a = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    sd_b = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    return sd_a, sd_b


def _logits(s: int = 40, k: int = 7, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(s, k, generator=g, dtype=dtype) * 3, torch.randn(s, k, generator=g, dtype=dtype) * 3


# ------------------------------------------------------------------------------------------------ key filtering


def test_is_parameter_key_excludes_bn_statistics_and_integer_buffers():
    assert is_parameter_key("conv.weight", torch.float32)
    assert is_parameter_key("bn.weight", torch.float32)
    assert is_parameter_key("bn.bias", torch.float16)
    assert not is_parameter_key("bn.running_mean", torch.float32)
    assert not is_parameter_key("bn.running_var", torch.float32)
    assert not is_parameter_key("bn.num_batches_tracked", torch.int64)


def test_weight_similarity_ignores_excluded_keys_even_if_passed():
    sd_a, sd_b = _state_dicts()
    clean = weight_similarity((k, sd_a[k], sd_b[k]) for k in sd_a)
    noisy_a = dict(sd_a, **{"bn.running_mean": torch.full((4,), 5.0), "bn.running_var": torch.full((4,), 9.0),
                            "bn.num_batches_tracked": torch.tensor(3)})
    noisy_b = dict(sd_b, **{"bn.running_mean": torch.full((4,), -5.0), "bn.running_var": torch.full((4,), 1.0),
                            "bn.num_batches_tracked": torch.tensor(700)})
    noisy = weight_similarity((k, noisy_a[k], noisy_b[k]) for k in noisy_a)
    assert noisy == clean
    assert clean.num_parameters == sum(v.numel() for v in sd_a.values())


# ------------------------------------------------------------------------------------------------- weight space


def test_weight_similarity_streamed_equals_flattened_numpy():
    sd_a, sd_b = _state_dicts()
    flat_a = np.concatenate([v.double().numpy().ravel() for v in sd_a.values()])
    flat_b = np.concatenate([v.double().numpy().ravel() for v in sd_b.values()])
    result = weight_similarity((k, sd_a[k], sd_b[k]) for k in sd_a)
    assert isinstance(result, WeightSimilarity)
    assert result.num_parameters == flat_a.size
    assert result.l2 == pytest.approx(np.sqrt(np.sum((flat_a - flat_b) ** 2)), rel=1e-12)
    expected_cos = flat_a @ flat_b / (np.linalg.norm(flat_a) * np.linalg.norm(flat_b))
    assert result.cosine == pytest.approx(expected_cos, rel=1e-12, abs=1e-15)


def test_weight_similarity_of_a_model_with_itself():
    sd_a, _ = _state_dicts()
    result = weight_similarity((k, v, v) for k, v in sd_a.items())
    assert result.l2 == 0.0
    assert result.cosine == pytest.approx(1.0, abs=1e-15)


def test_weight_similarity_scaled_and_negated_models():
    sd_a, _ = _state_dicts()
    assert weight_similarity((k, v, 2.5 * v) for k, v in sd_a.items()).cosine == pytest.approx(1.0, abs=1e-12)
    assert weight_similarity((k, v, -v) for k, v in sd_a.items()).cosine == pytest.approx(-1.0, abs=1e-12)


def test_weight_similarity_zero_vectors():
    z = torch.zeros(3, 2)
    x = torch.ones(3, 2)
    both = weight_similarity([("w", z, z)])
    assert (both.cosine, both.l2) == (1.0, 0.0)
    one = weight_similarity([("w", z, x)])
    assert one.cosine == 0.0
    assert one.l2 == pytest.approx(np.sqrt(6.0), rel=1e-15)
    assert weight_similarity([]) == WeightSimilarity(l2=0.0, cosine=1.0, num_parameters=0)


def test_weight_similarity_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        weight_similarity([("w", torch.zeros(3), torch.zeros(4))])


# ------------------------------------------------------------------------------------------------- output space


def test_symmetric_kl_matches_numpy_and_is_symmetric_and_positive():
    a, b = _logits()
    expected = np_symmetric_kl(a.double().numpy(), b.double().numpy())
    assert symmetric_kl(a, b) == pytest.approx(expected, rel=1e-12)
    assert symmetric_kl(a, b) == pytest.approx(symmetric_kl(b, a), rel=1e-14)
    assert symmetric_kl(a, b) > 0.0


def test_logit_mse_matches_numpy():
    a, b = _logits()
    expected = np.mean((a.double().numpy() - b.double().numpy()) ** 2)
    assert logit_mse(a, b) == pytest.approx(expected, rel=1e-12)


def test_disagreement_and_ensemble_accuracy_match_numpy():
    a, b = _logits(s=200, k=5)
    an, bn = a.double().numpy(), b.double().numpy()
    labels = np.random.default_rng(0).integers(0, 5, size=200)
    expected_dis = np.mean(an.argmax(1) != bn.argmax(1))
    expected_acc = np.mean(((an + bn) / 2).argmax(1) == labels)
    assert 0.0 < expected_dis < 1.0 and 0.0 < expected_acc < 1.0  # the data make both metrics non-trivial
    assert disagreement(a, b) == pytest.approx(expected_dis, abs=1e-15)
    assert ensemble_accuracy(a, b, torch.from_numpy(labels)) == pytest.approx(expected_acc, abs=1e-15)
    assert ensemble_accuracy(a, b, labels) == pytest.approx(expected_acc, abs=1e-15)
    assert ensemble_accuracy(a, b, labels.tolist()) == pytest.approx(expected_acc, abs=1e-15)


def test_ensemble_accuracy_is_not_the_mean_of_accuracies():
    # Row 0: a says class 0 weakly, b says class 1 strongly -> the logit ensemble says 1.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 5.0], [0.0, 1.0]])
    assert ensemble_accuracy(a, b, [1, 1]) == 1.0
    assert ensemble_accuracy(a, b, [0, 1]) == 0.5
    assert disagreement(a, b) == 0.5


def test_output_metrics_of_a_matrix_with_itself_are_exactly_zero():
    a, _ = _logits()
    assert symmetric_kl(a, a) == 0.0
    assert logit_mse(a, a) == 0.0
    assert disagreement(a, a) == 0.0
    assert symmetric_kl(a, a.clone()) == 0.0


def test_half_precision_inputs_are_computed_in_float64():
    a, b = _logits(dtype=torch.float16)
    assert symmetric_kl(a, b) == pytest.approx(np_symmetric_kl(a.double().numpy(), b.double().numpy()), rel=1e-12)
    assert logit_mse(a, b) == pytest.approx(np.mean((a.double().numpy() - b.double().numpy()) ** 2), rel=1e-12)


def test_output_metrics_reject_mismatched_shapes():
    a, b = _logits()
    with pytest.raises(ValueError):
        symmetric_kl(a, b[:-1])
    with pytest.raises(ValueError):
        logit_mse(a.reshape(-1), b.reshape(-1))
    with pytest.raises(ValueError):
        ensemble_accuracy(a, b, [0, 1])


# ---------------------------------------------------------------------------------------------------------- CKA


@pytest.mark.parametrize("s,d1,d2", [(6, 9, 12), (60, 5, 3)], ids=["sample-space", "feature-space"])
def test_linear_cka_matches_numpy_formula_on_both_code_paths(s, d1, d2):
    g = torch.Generator().manual_seed(s)
    x = torch.randn(s, d1, generator=g)
    # y shares part of x's signal, so CKA is far from both 0 and 1.
    y = torch.cat([x[:, :1] * 2, torch.randn(s, d2 - 1, generator=g)], dim=1) + 3.0
    expected = np_cka(x.double().numpy(), y.double().numpy())
    assert 0.05 < expected < 0.95
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("s,d", [(6, 10), (50, 4)], ids=["sample-space", "feature-space"])
def test_linear_cka_properties(s, d):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(s, d, generator=g, dtype=torch.float64)
    y = torch.randn(s, d + 1, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert linear_cka(7.5 * x, y) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert linear_cka(x @ q, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_of_a_constant_representation_is_zero():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(2))
    constant = torch.full((30, 3), 0.1)  # 0.1 is not exact in binary: a naive mean leaves rounding residues
    assert linear_cka(constant, x) == 0.0
    assert linear_cka(x, constant) == 0.0
    assert linear_cka(torch.full((5, 20), 0.1), torch.randn(5, 20)) == 0.0


def test_linear_cka_rejects_mismatched_samples():
    with pytest.raises(ValueError):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))


# -------------------------------------------------------------------------------------------- output_similarity


def test_output_similarity_combines_the_metrics_and_leaves_inputs_unchanged():
    a, b = _logits(s=30, k=6)
    g = torch.Generator().manual_seed(3)
    fa, fb = torch.randn(30, 8, generator=g, dtype=torch.float64), torch.randn(30, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (30,), generator=g)
    before = [t.clone() for t in (a, b, fa, fb, labels)]
    result = output_similarity(a, b, features_a=fa, features_b=fb, labels=labels)
    assert isinstance(result, OutputSimilarity)
    assert result == OutputSimilarity(
        kl=symmetric_kl(a, b),
        mse=logit_mse(a, b),
        cka_logits=linear_cka(a, b),
        cka_features=linear_cka(fa, fb),
        disagreement=disagreement(a, b),
        ensemble_accuracy=ensemble_accuracy(a, b, labels),
    )
    bare = output_similarity(a, b)
    assert bare.cka_features is None and bare.ensemble_accuracy is None
    assert bare.kl == result.kl
    for old, new in zip(before, (a, b, fa, fb, labels)):
        assert torch.equal(old, new) and old.dtype == new.dtype
    with pytest.raises(ValueError):
        output_similarity(a, b, features_a=fa)


def test_weight_similarity_leaves_inputs_unchanged():
    sd_a, sd_b = _state_dicts()
    sd_b = {k: v.double() for k, v in sd_b.items()}  # float64 inputs: .to(float64) returns the tensor itself
    before_a = {k: v.clone() for k, v in sd_a.items()}
    before_b = {k: v.clone() for k, v in sd_b.items()}
    weight_similarity((k, sd_a[k], sd_b[k]) for k in sd_a)
    linear_cka(sd_b["fc.weight"], sd_b["fc.weight"])
    for k in sd_a:
        assert torch.equal(sd_a[k], before_a[k]) and torch.equal(sd_b[k], before_b[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu():
    a, b = _logits()
    ca, cb = a.cuda(), b.cuda()
    labels = torch.arange(a.shape[0]) % a.shape[1]
    gpu_out = output_similarity(ca, cb, features_a=ca, features_b=cb, labels=labels.cuda())
    cpu_out = output_similarity(a, b, features_a=a, features_b=b, labels=labels)
    assert dataclasses.astuple(gpu_out) == pytest.approx(dataclasses.astuple(cpu_out), rel=1e-10)
    sd_a, sd_b = _state_dicts()
    gpu = weight_similarity((k, sd_a[k].cuda(), sd_b[k].cuda()) for k in sd_a)
    cpu = weight_similarity((k, sd_a[k], sd_b[k]) for k in sd_a)
    assert gpu.l2 == pytest.approx(cpu.l2, rel=1e-12) and gpu.cosine == pytest.approx(cpu.cosine, rel=1e-12)
