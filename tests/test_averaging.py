"""Golden numerics of the averaging engine and the mix/uniform recipes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import hfsoup
from hfsoup import InvalidWeightsError, NonFiniteError
from conftest import save_model_dir


def _sd(folder):
    return load_file(str(folder / "model.safetensors"))


def test_uniform_soup_is_the_exact_mean(model_dirs):
    soup = hfsoup.uniform_soup([str(d) for d in model_dirs])
    sds = [_sd(d) for d in model_dirs]
    assert soup.weights == pytest.approx([1 / 3] * 3)
    for key, value in soup.state_dict.items():
        if value.dtype.is_floating_point:
            expected = torch.stack([sd[key].double() for sd in sds]).sum(0).div(3).to(value.dtype)
            assert torch.equal(value, expected), key


@pytest.mark.parametrize("alpha,which", [(0.0, 0), (1.0, 1)])
def test_alpha_endpoints_give_the_inputs_bit_exactly(model_dirs, alpha, which):
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), alpha)
    expected = _sd(model_dirs[which])
    assert soup.state_dict.keys() == expected.keys()
    for key in expected:
        assert soup.state_dict[key].dtype == expected[key].dtype
        assert torch.equal(soup.state_dict[key], expected[key]), key


def test_mix_weights_second_model_by_alpha(model_dirs):
    a, b = _sd(model_dirs[0]), _sd(model_dirs[1])
    soup = hfsoup.mix(str(model_dirs[0]), str(model_dirs[1]), 0.25)
    assert soup.weights == [0.75, 0.25]
    key = "fc.weight"
    expected = (a[key].double() * 0.75 + b[key].double() * 0.25).float()
    assert torch.equal(soup.state_dict[key], expected)


def test_integer_buffers_keep_int64_and_follow_the_policy(model_dirs):
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs])
    key = "bn1.num_batches_tracked"
    values = [_sd(d)[key].item() for d in model_dirs]  # 1, 2, 3 forward passes in train mode
    assert values == [1, 2, 3]
    for policy, expected in [("mean", 2), ("max", 3), ("first", 1)]:
        out = hfsoup.average(ings, integer_policy=policy)
        assert out[key].dtype == torch.int64
        assert out[key].item() == expected, policy
    out = hfsoup.average(ings[:2], [0.25, 0.75], integer_policy="mean")
    assert out[key].item() == round(0.25 * 1 + 0.75 * 2)


def test_bn_running_stats_are_averaged_like_weights(model_dirs):
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs[:2]])
    out = hfsoup.average(ings, [0.5, 0.5])
    key = "bn1.running_var"
    a, b = _sd(model_dirs[0])[key], _sd(model_dirs[1])[key]
    assert torch.equal(out[key], ((a.double() + b.double()) / 2).float())


def test_dtypes_are_preserved(tmp_path):
    import timm

    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = timm.create_model("resnet10_cifar_nano").half()
        dirs.append(hfsoup.hub.format.save_model(m, tmp_path / f"h{seed}"))
    soup = hfsoup.mix(str(dirs[0]), str(dirs[1]), 0.5)
    sd0 = _sd(dirs[0])
    for key, value in soup.state_dict.items():
        assert value.dtype == sd0[key].dtype
    assert soup.state_dict["fc.weight"].dtype == torch.float16


@pytest.mark.parametrize("weights", [[0.5, 0.6], [-0.5, 1.5], [float("nan"), 1.0], [0.0, 0.0], [1.0]])
def test_bad_weights_are_rejected(model_dirs, weights):
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs[:2]])
    with pytest.raises(InvalidWeightsError):
        hfsoup.average(ings, weights)


def test_weights_not_summing_to_one_are_normalised_on_request(model_dirs):
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs[:2]])
    assert hfsoup.check_weights([1, 3], 2, normalize=True) == [0.25, 0.75]
    a = hfsoup.average(ings, [1, 3], normalize=True)
    b = hfsoup.average(ings, [0.25, 0.75])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("alpha", ["-0.1", "1.5", "nan", "abc", ""])
def test_alpha_outside_unit_interval_is_rejected(alpha):
    with pytest.raises(InvalidWeightsError):
        hfsoup.parse_alphas(alpha)


def test_alpha_list_is_parsed():
    assert hfsoup.parse_alphas("0,0.25,0.5,0.75,1") == [0, 0.25, 0.5, 0.75, 1]


def test_non_finite_result_is_an_error(tmp_path):
    good = save_model_dir(tmp_path / "good", seed=0)
    model = hfsoup.build_model(hfsoup.load_ingredient(str(good)).config, None)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    bad = hfsoup.hub.format.save_model(model, tmp_path / "bad")
    with pytest.raises(NonFiniteError, match="fc.weight"):
        hfsoup.mix(str(good), str(bad), 0.5)
    # alpha = 0 never reads the second model: no NaN leaks in.
    soup = hfsoup.mix(str(good), str(bad), 0.0)
    assert torch.isfinite(soup.state_dict["fc.weight"]).all()


def test_float32_accumulation_option(model_dirs):
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs])
    out32 = hfsoup.average(ings, accumulate_dtype=torch.float32)
    out64 = hfsoup.average(ings)
    torch.testing.assert_close(out32["fc.weight"], out64["fc.weight"], rtol=1e-6, atol=1e-7)


def test_peak_memory_does_not_hold_every_ingredient(model_dirs, monkeypatch):
    """The engine reads one tensor at a time: at most one tensor per ingredient is alive per key."""
    ings = hfsoup.load_ingredients([str(d) for d in model_dirs])
    live, peak = [0], [0]
    from hfsoup.core.safetensors_io import SafetensorsReader

    orig = SafetensorsReader.get_tensor

    class Tracked(torch.Tensor):
        pass

    def tracking(self, key):
        t = orig(self, key)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        import weakref

        weakref.finalize(t, lambda: live.__setitem__(0, live[0] - 1))
        return t

    monkeypatch.setattr(SafetensorsReader, "get_tensor", tracking)
    hfsoup.average(ings)
    assert peak[0] <= 2  # the tensor being added and, at most, the previous one awaiting collection


def test_weights_within_tolerance_are_rescaled_by_their_exact_sum(model_dirs):
    """[0.3, 0.6999991] sums to 1 within the 1e-6 tolerance: accepted, and divided by the exact sum, so a model
    souped with itself is the model, bit for bit (it used to be scaled by 0.9999991)."""
    import math

    weights = hfsoup.check_weights([0.3, 0.6999991], 2)
    total = math.fsum([0.3, 0.6999991])
    assert weights == [0.3 / total, 0.6999991 / total] and math.fsum(weights) == 1.0
    ing = hfsoup.load_ingredient(str(model_dirs[0]))
    out = hfsoup.average([ing, ing], [0.3, 0.6999991])
    expected = _sd(model_dirs[0])
    for key in expected:
        assert torch.equal(out[key], expected[key]), key
    # weights that sum to exactly one are returned unchanged (golden results stay exact)
    assert hfsoup.check_weights([0.25, 0.75], 2) == [0.25, 0.75]
    assert hfsoup.check_weights([1 / 3] * 3, 3) == [1 / 3] * 3


def _float64_model(tmp_path, name, seed, fc_value=None):
    import timm

    torch.manual_seed(seed)
    m = timm.create_model("resnet10_cifar_nano", num_classes=10).double().eval()
    if fc_value is not None:
        with torch.no_grad():
            m.fc.weight.fill_(fc_value)
    return hfsoup.hub.format.save_model(m, tmp_path / name)


def test_huge_finite_float64_values_are_not_called_an_overflow(tmp_path):
    """640 values of 1e306 sum past float64's range; the check used to sum the result and report "overflow when
    casting back" for a perfectly finite soup."""
    a = _float64_model(tmp_path, "a", 0, fc_value=1e306)
    b = _float64_model(tmp_path, "b", 1, fc_value=1e306)
    soup = hfsoup.mix(a, b, 0.5)
    assert soup.state_dict["fc.weight"].dtype == torch.float64
    assert torch.equal(soup.state_dict["fc.weight"], torch.full((10, 64), 1e306, dtype=torch.float64))


def test_non_finite_float64_result_names_its_cause(tmp_path):
    good = _float64_model(tmp_path, "good", 0)
    bad = _float64_model(tmp_path, "bad", 1, fc_value=float("inf"))
    with pytest.raises(NonFiniteError, match=r"'fc.weight' contains NaN/Inf \(non-finite values in .*bad\)") as e:
        hfsoup.mix(good, bad, 0.5)
    assert e.value.key == "fc.weight" and e.value.references == [str(bad)]
    # finite inputs whose sum overflows float64: a real overflow, said as such
    big = [_float64_model(tmp_path, f"big{i}", i, fc_value=1.5e308) for i in range(2)]
    with pytest.raises(NonFiniteError, match="the ingredients are finite, but their weighted sum overflows float64"):
        hfsoup.mix(big[0], big[1], 0.5)


def test_all_finite():
    from hfsoup.core.averaging import all_finite

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert all_finite(torch.tensor([1.0, -2.0], dtype=dtype))
        for bad in (float("nan"), float("inf"), float("-inf")):
            assert not all_finite(torch.tensor([1.0, bad], dtype=dtype)), (dtype, bad)
    assert all_finite(torch.empty(0)) and all_finite(torch.tensor([3], dtype=torch.int64))


def test_mix_models_is_the_registry_entry_of_mix(model_dirs):
    soup = hfsoup.get_recipe("mix").load()(model_dirs[:2], alpha=0.25, integer_policy="mean", progress=False)
    ref = hfsoup.mix(model_dirs[0], model_dirs[1], 0.25)
    assert soup.weights == [0.75, 0.25] and soup.parameters == {"alpha": 0.25, "integer_policy": "mean"}
    assert all(torch.equal(soup.state_dict[k], ref.state_dict[k]) for k in ref.state_dict)
    with pytest.raises(hfsoup.HfSoupError, match="recipe 'mix' takes exactly 2 models, got 3"):
        hfsoup.get_recipe("mix").load()(model_dirs)
    with pytest.raises(hfsoup.HfSoupError, match=r"--alpha must be <= 1, got 1.5"):
        hfsoup.get_recipe("mix").load()(model_dirs[:2], alpha=1.5)


# -- the tiled engine against the untiled loop it replaced -------------------------------------------------------


def _untiled_average(state_dicts, weights, acc_dtype=torch.float64):
    """The engine before tiling (one model-sized accumulator per tensor), float tensors only: the reference."""
    equal = all(w == weights[0] for w in weights)
    out = {}
    for key, first in state_dicts[0].items():
        if not first.dtype.is_floating_point:
            continue
        acc = None
        for w, sd in zip(weights, state_dicts):
            t, scale = sd[key], (1.0 if equal else w)
            if acc is None:
                acc = t.to(acc_dtype, copy=True)
                if scale != 1.0:
                    acc.mul_(scale)
            else:
                acc.add_(t, alpha=scale)
        if equal and len(state_dicts) > 1:
            acc.div_(len(state_dicts))
        out[key] = acc.to(first.dtype)
    return out


def _random_models(tmp_path, n, dtype):
    """Models whose tensors span many magnitudes (rounding of the sums matters), saved in hfsoup's format."""
    dirs = []
    for i in range(n):
        model = hfsoup.build_model(hfsoup.load_ingredient(str(save_model_dir(tmp_path / f"s{i}", seed=i))).config,
                                   None)
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in model.parameters():
                scale = 10.0 ** (torch.rand((), generator=gen).item() * 8 - 4)
                p.copy_(torch.randn(p.shape, generator=gen) * scale + torch.randn((), generator=gen))
                p.view(-1)[:7] = -0.0  # -0.0 in every model: the soup keeps the sign bit, as the untiled loop did
        dirs.append(hfsoup.hub.format.save_model(model.to(dtype), tmp_path / f"r{i}"))
    return dirs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tiled_engine_is_bit_identical_to_the_untiled_loop(tmp_path, monkeypatch, dtype):
    from hfsoup.core import averaging

    dirs = _random_models(tmp_path, 5, dtype)
    sds = [_sd(d) for d in dirs]
    ings = hfsoup.load_ingredients([str(d) for d in dirs])
    cases = [([0.2] * 5, torch.float64), ([0.123456789, 0.3, 0.076543211, 0.25, 0.25], torch.float64),
             ([0.5, 0.5, 0, 0, 0], torch.float64), ([0.1, 0.2, 0.3, 0.15, 0.25], torch.float32)]
    # odd tiles (not a multiple of any vector width), tiny tiles, the default; one thread and several
    for tile, workers in [(777, 1), (64, 3), (averaging.TILE_ELEMENTS, 2)]:
        monkeypatch.setattr(averaging, "TILE_ELEMENTS", tile)
        for weights, acc_dtype in cases:
            used = [(w, sd) for w, sd in zip(weights, sds) if w > 0]
            expected = _untiled_average([sd for _, sd in used], [w for w, _ in used], acc_dtype)
            out = hfsoup.average(ings, weights, accumulate_dtype=acc_dtype, workers=workers)
            for key, value in expected.items():
                assert out[key].dtype == value.dtype
                assert _same_bits(out[key], value), (tile, workers, weights, acc_dtype, key)
    # more ingredients than one summation group (uniform soups sum in groups): 5 models 7 times over, N = 35
    many = (ings * 7)[:35]
    expected = _untiled_average((sds * 7)[:35], [1 / 35] * 35)
    out = hfsoup.average(many, workers=2)
    assert all(_same_bits(out[k], v) for k, v in expected.items())


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (torch.equal counts -0.0 == +0.0 and fails on NaN)."""
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(a.view(as_int), b.view(as_int))


def test_tiled_engine_reads_tensors_held_in_memory_like_files(tmp_path, monkeypatch):
    """Pickle checkpoints are held in memory (no byte ranges to read): the tiles slice them, same numbers."""
    import dataclasses

    from hfsoup.core import averaging

    monkeypatch.setattr(averaging, "TILE_ELEMENTS", 1000)
    dirs = _random_models(tmp_path, 3, torch.float32)
    on_disk = hfsoup.load_ingredients([str(d) for d in dirs])
    in_memory = [dataclasses.replace(ing, _pickle_state=_sd(d)) for ing, d in zip(on_disk, dirs)]
    for weights in ([1 / 3] * 3, [0.2, 0.3, 0.5]):
        a, b = hfsoup.average(on_disk, weights), hfsoup.average(in_memory, weights)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiled_engine_reports_the_first_non_finite_tensor_in_key_order(tmp_path, monkeypatch):
    from hfsoup.core import averaging

    monkeypatch.setattr(averaging, "TILE_ELEMENTS", 64)
    good = save_model_dir(tmp_path / "good", seed=0)
    model = hfsoup.build_model(hfsoup.load_ingredient(str(good)).config, None)
    with torch.no_grad():
        model.fc.weight[-1, -1] = float("inf")  # in the last tile of fc.weight
        model.conv1.weight.view(-1)[-1] = float("nan")
    bad = hfsoup.hub.format.save_model(model, tmp_path / "bad")
    with pytest.raises(NonFiniteError, match=r"averaged tensor 'conv1.weight' contains NaN/Inf") as e:
        hfsoup.average(hfsoup.load_ingredients([str(good), str(bad)]), workers=2)
    assert e.value.references == [str(bad)]
