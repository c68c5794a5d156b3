"""fastnorm.nn: the layer objects. Forward against fastnorm.reference, backward (through the
layer API: dx and every stored parameter gradient) against finite differences in float64,
BatchNorm's running statistics against the reference, the training/eval switch, parameter
bookkeeping, errors, and the example training script."""

import runpy
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOAT_DTYPES, assert_close
from gradcheck import check_grad

from fastnorm import nn
from fastnorm import reference as ref

F64 = np.float64


def randomize(layer, rng, loc=1.0):
    """Give every parameter random values (away from the trivial ones and zeros)."""
    for name, p, _ in layer.params():
        center = loc if name in ("weight", "g") else 0.0
        p[...] = center + 0.5 * rng.standard_normal(p.shape)
    return layer


def check_layer_grads(layer, x, rng, training=True, rtol=1e-5, atol=1e-6):
    """backward(dy)'s dx and layer.grads against central differences of the forward."""
    dy = rng.standard_normal(layer.forward(x, training=training).shape)
    layer.forward(x, training=training)
    dx = layer.backward(dy)
    grads = {name: g.copy() for name, _, g in layer.params()}
    assert dx.shape == x.shape
    check_grad(lambda x_: layer.forward(x_, training=training), x, dy, dx,
               rtol=rtol, atol=atol, err_msg=f"{type(layer).__name__} dx")
    for name, p, _ in layer.params():
        saved = p.copy()

        def f(p_, p=p):
            p[...] = p_
            return layer.forward(x, training=training)

        try:
            check_grad(f, saved, dy, grads[name], rtol=rtol, atol=atol,
                       err_msg=f"{type(layer).__name__} d{name}")
        finally:
            p[...] = saved
    return dx, grads


# --------------------------------------------------------------------------- gradients

GRAD_CASES = {
    "LayerNorm(5)": (lambda: nn.LayerNorm(5, dtype=F64), (4, 5)),
    "LayerNorm((2, 3))": (lambda: nn.LayerNorm((2, 3), dtype=F64), (3, 2, 3)),
    "LayerNorm no affine": (lambda: nn.LayerNorm(6, elementwise_affine=False, dtype=F64),
                            (3, 6)),
    "RMSNorm(6)": (lambda: nn.RMSNorm(6, dtype=F64), (4, 6)),
    "BatchNorm axis=1": (lambda: nn.BatchNorm(3, dtype=F64), (4, 3, 5)),
    "BatchNorm axis=-1": (lambda: nn.BatchNorm(3, axis=-1, dtype=F64), (4, 5, 3)),
    "BatchNorm (N, C)": (lambda: nn.BatchNorm(4, dtype=F64), (6, 4)),
    "GroupNorm(2, 4)": (lambda: nn.GroupNorm(2, 4, dtype=F64), (3, 4, 5)),
    "GroupNorm axis=-1": (lambda: nn.GroupNorm(3, 6, axis=-1, dtype=F64), (2, 5, 6)),
    "InstanceNorm affine": (lambda: nn.InstanceNorm(3, affine=True, dtype=F64), (2, 3, 6)),
    "InstanceNorm": (lambda: nn.InstanceNorm(3, dtype=F64), (2, 3, 6)),
    "CosineNorm": (lambda: nn.CosineNorm(5, 4, rng=1, dtype=F64), (6, 5)),
    "CosineNorm 3-d": (lambda: nn.CosineNorm(5, 3, rng=2, dtype=F64), (2, 3, 5)),
    "WeightNorm(Linear)": (lambda: nn.WeightNorm(nn.Linear(5, 4, rng=3, dtype=F64)), (6, 5)),
    "WeightNorm(Linear) axis=1": (
        lambda: nn.WeightNorm(nn.Linear(5, 4, bias=False, rng=4, dtype=F64), axis=1), (6, 5)),
    "Linear": (lambda: nn.Linear(5, 3, rng=5, dtype=F64), (2, 4, 5)),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_backward_matches_finite_differences(case, rng):
    make, shape = GRAD_CASES[case]
    layer = randomize(make(), rng)
    x = 1.0 + 2.0 * rng.standard_normal(shape)
    dx, grads = check_layer_grads(layer, x, rng)
    assert dx.dtype == F64
    assert set(grads) == {name for name, _, _ in layer.params()}


def test_batch_norm_eval_backward_matches_finite_differences(rng):
    layer = randomize(nn.BatchNorm(3, momentum=0.5, dtype=F64), rng)
    for _ in range(3):
        layer.forward(2.0 + rng.standard_normal((5, 3, 4)))
    x = rng.standard_normal((4, 3, 2))
    running = (layer.running_mean.copy(), layer.running_var.copy())
    check_layer_grads(layer, x, rng, training=False)
    np.testing.assert_array_equal(layer.running_mean, running[0])
    np.testing.assert_array_equal(layer.running_var, running[1])


def test_sequential_backward_matches_finite_differences(rng):
    model = nn.Sequential(
        nn.Linear(4, 6, rng=1, dtype=F64),
        nn.BatchNorm(6, dtype=F64),
        nn.ReLU(),
        nn.Linear(6, 5, rng=2, dtype=F64),
        nn.LayerNorm(5, dtype=F64),
        nn.WeightNorm(nn.Linear(5, 3, rng=3, dtype=F64)),
    )
    randomize(model, rng)
    x = rng.standard_normal((7, 4))
    dy = rng.standard_normal((7, 3))
    model.forward(x)
    dx = model.backward(dy)
    check_grad(lambda x_: model.forward(x_), x, dy, dx)
    names = [name for name, _, _ in model.params()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
                     "4.weight", "4.bias", "5.v", "5.g", "5.bias"]
    name, p, g = model.params()[8]
    saved, g = p.copy(), g.copy()

    def f(v):
        p[...] = v
        return model.forward(x)

    check_grad(f, saved, dy, g, err_msg=name)
    p[...] = saved


# --------------------------------------------------------------------------- forward vs reference


def affine_ref(layer):
    return [None if p is None else p.astype(F64) for p in (layer.weight,
                                                           getattr(layer, "bias", None))]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_forward_matches_reference(dtype, rng):
    x = (0.5 + 2.0 * rng.standard_normal((4, 6, 5))).astype(dtype)
    x64 = x.astype(F64)
    cases = [
        (nn.LayerNorm((6, 5), dtype=dtype), lambda w, b: ref.layer_norm(x64, w, b, axis=1)),
        (nn.RMSNorm(5, eps=1e-4, dtype=dtype), lambda w, b: ref.rms_norm(x64, w, eps=1e-4)),
        (nn.BatchNorm(6, eps=1e-3, dtype=dtype),
         lambda w, b: ref.batch_norm(x64, w, b, eps=1e-3)),
        (nn.BatchNorm(5, axis=-1, dtype=dtype),
         lambda w, b: ref.batch_norm(x64, w, b, axis=-1)),
        (nn.GroupNorm(3, 6, dtype=dtype), lambda w, b: ref.group_norm(x64, 3, w, b)),
        (nn.InstanceNorm(5, affine=True, axis=2, dtype=dtype),
         lambda w, b: ref.instance_norm(x64, w, b, axis=2)),
    ]
    for layer, expected in cases:
        randomize(layer, rng)
        assert_close(layer.forward(x), expected(*affine_ref(layer)), dtype,
                     err_msg=type(layer).__name__)

    cn = nn.CosineNorm(5, 3, rng=rng, dtype=dtype)
    exp = ref.cosine_norm(x64.reshape(-1, 5), cn.weight.astype(F64)).reshape(4, 6, 3)
    assert_close(cn.forward(x), exp, dtype, err_msg="CosineNorm")

    lin = nn.Linear(5, 4, rng=rng, dtype=dtype)
    wn = randomize(nn.WeightNorm(lin), rng)
    w_exp = ref.weight_norm(wn.v.astype(F64), wn.g.astype(F64))
    y = wn.forward(x)
    assert_close(lin.weight, w_exp, dtype, err_msg="WeightNorm weight")
    assert_close(y, x64 @ w_exp.T + lin.bias.astype(F64), dtype, factor=10.0,
                 err_msg="WeightNorm output")


def test_weight_norm_starts_as_the_wrapped_layer(rng):
    lin = nn.Linear(6, 3, rng=rng, dtype=F64)
    x = rng.standard_normal((5, 6))
    before = lin.forward(x)
    wn = nn.WeightNorm(lin)
    np.testing.assert_allclose(wn.forward(x), before, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(wn.g, np.linalg.norm(wn.v, axis=1), rtol=1e-12)


# --------------------------------------------------------------------------- running statistics


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_running_stats_match_reference(dtype, axis, rng):
    C = 4
    layer = randomize(nn.BatchNorm(C, momentum=0.3, axis=axis, dtype=dtype), rng)
    rm, rv = np.zeros(C), np.ones(C)
    w, b = affine_ref(layer)
    for step in range(4):
        shape = (5, C, 3) if axis == 1 else (5, 3, C)
        x = (step + rng.standard_normal(shape) * (1 + step)).astype(dtype)
        y = layer.forward(x, training=True)
        exp = ref.batch_norm(x.astype(F64), w, b, rm, rv, momentum=0.3, axis=axis)
        assert_close(y, exp, dtype, err_msg=f"step {step}")
        assert_close(layer.running_mean, rm, dtype, err_msg=f"running_mean step {step}")
        assert_close(layer.running_var, rv, dtype, err_msg=f"running_var step {step}")
    x = rng.standard_normal(shape).astype(dtype)
    exp = ref.batch_norm(x.astype(F64), w, b, rm, rv, training=False, axis=axis)
    assert_close(layer.forward(x, training=False), exp, dtype, err_msg="eval")


def test_batch_norm_training_eval_switch(rng):
    layer = randomize(nn.BatchNorm(3, dtype=F64), rng)
    for _ in range(5):
        layer.forward(3.0 + rng.standard_normal((8, 3)))
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    x = rng.standard_normal((6, 3))
    y_eval = layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.running_mean, rm)  # eval leaves them alone
    np.testing.assert_array_equal(layer.running_var, rv)
    # in eval mode a sample's output does not depend on the rest of its batch
    np.testing.assert_allclose(layer.forward(x[:2], training=False), y_eval[:2], rtol=1e-14)
    y_train = layer.forward(x, training=True)
    assert not np.allclose(y_train, y_eval)
    assert not np.array_equal(layer.running_mean, rm)
    np.testing.assert_allclose(y_train.mean(axis=0), layer.bias, atol=1e-12)


def test_batch_norm_without_running_stats_uses_batch_in_eval(rng):
    layer = nn.BatchNorm(3, track_running_stats=False, dtype=F64)
    assert layer.running_mean is None and layer.running_var is None
    x = 2.0 + rng.standard_normal((6, 3))
    np.testing.assert_allclose(layer.forward(x, training=False), ref.batch_norm(x),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- bookkeeping


def test_params_are_the_layers_arrays_and_sgd_updates_them(rng):
    layer = nn.LayerNorm(4)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = layer.forward(x)
    layer.backward(2.0 * y)
    (n1, w, gw), (n2, b, gb) = layer.params()
    assert (n1, n2) == ("weight", "bias")
    assert w is layer.weight and b is layer.bias
    assert gw is layer.grads["weight"] and gb is layer.grads["bias"]
    expected = layer.weight - 0.1 * gw
    for _, p, g in layer.params():
        p -= 0.1 * g
    np.testing.assert_array_equal(layer.weight, expected)
    layer.zero_grad()
    assert all(not g.any() for _, _, g in layer.params())


def test_grads_have_parameter_dtype(rng):
    layer = nn.GroupNorm(2, 4)  # float32 parameters
    x = rng.standard_normal((2, 4, 3))  # float64 input
    y = layer.forward(x)
    assert y.dtype == F64
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == F64
    assert layer.grads["weight"].dtype == np.float32
    assert layer.grads["bias"].dtype == np.float32


def test_no_affine_has_no_params():
    assert nn.LayerNorm(3, elementwise_affine=False).params() == []
    assert nn.InstanceNorm(3).params() == []
    assert [n for n, _, _ in nn.RMSNorm(3).params()] == ["weight"]
    assert nn.ReLU().params() == []


# --------------------------------------------------------------------------- errors


def test_backward_before_forward_runtime_error():
    for layer in (nn.LayerNorm(3), nn.BatchNorm(3), nn.CosineNorm(3, 2), nn.Linear(3, 2)):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones((2, 3), np.float32))


def test_constructor_errors():
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="num_groups"):
        nn.GroupNorm(0, 4)
    with pytest.raises(TypeError, match="dtype"):
        nn.LayerNorm(3, dtype=np.int32)
    with pytest.raises(TypeError, match="integer"):
        nn.BatchNorm(2.5)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="no array parameter"):
        nn.WeightNorm(nn.ReLU())


def test_forward_shape_errors(rng):
    x = rng.standard_normal((2, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="trailing axes"):
        nn.LayerNorm(4).forward(x)
    with pytest.raises(ValueError, match="last axis"):
        nn.CosineNorm(4, 2).forward(x)
    with pytest.raises(ValueError):
        nn.BatchNorm(4).forward(x)
    layer = nn.BatchNorm(5)
    rm = layer.running_mean.copy()
    with pytest.raises(ValueError):
        layer.forward(x[:1])  # one value per channel in training
    np.testing.assert_array_equal(layer.running_mean, rm)


# --------------------------------------------------------------------------- the example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_numpy.py"


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not next to the tests")
def test_example_training_loss_falls():
    train = runpy.run_path(str(EXAMPLE), run_name="example")["train"]
    losses, accuracy = train(steps=60, batch=64, verbose=False)
    assert len(losses) == 60 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert accuracy > 0.5  # four classes: chance is 0.25


# --------------------------------------------------------------------------- data-dependent init


def test_weight_norm_init_from_data_standardizes_the_outputs():
    rng = np.random.default_rng(5)
    layer = nn.WeightNorm(nn.Linear(6, 4, rng=rng, dtype=np.float64))
    direction = layer.v / np.linalg.norm(layer.v, axis=1, keepdims=True)
    x = rng.standard_normal((200, 6)) * 3.0 + 2.0
    assert layer.init_from_data(x) is layer
    y = layer.forward(x)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1.0, rtol=1e-12)
    # v keeps its direction; g and the bias are the ones the paper gives
    t = x @ direction.T
    np.testing.assert_allclose(layer.g, 1.0 / t.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.layer.bias, -t.mean(axis=0) / t.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(layer.v / np.linalg.norm(layer.v, axis=1, keepdims=True),
                                  direction)


def test_weight_norm_init_from_data_unit_axis_and_errors():
    rng = np.random.default_rng(6)
    layer = nn.WeightNorm(nn.Linear(3, 2, rng=rng, dtype=np.float64))
    x = rng.standard_normal((5, 7, 3))
    y = layer.init_from_data(x).forward(x)  # units on the last axis, positions on axis 1
    np.testing.assert_allclose(y.reshape(-1, 2).std(axis=0), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="unit_axis"):
        layer.init_from_data(x, unit_axis=1)
    with pytest.raises(ValueError, match="needs a bias"):
        nn.WeightNorm(nn.Linear(3, 2, bias=False, rng=rng)).init_from_data(x)


WHITENING_EXAMPLE = EXAMPLE.parent / "train_whitening.py"


@pytest.mark.skipif(not WHITENING_EXAMPLE.exists(), reason="examples/ is not next to the tests")
@pytest.mark.parametrize("model", ["wn-meanbn", "iternorm", "batchnorm"])
def test_whitening_example_training_loss_falls(model):
    train = runpy.run_path(str(WHITENING_EXAMPLE), run_name="example")["train"]
    losses, accuracy = train(model, steps=80, batch=64, verbose=False)
    assert len(losses) == 80 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert accuracy > 0.45  # four classes: chance is 0.25
