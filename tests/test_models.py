"""Every core follows the recurrent contract of ``models/base.py``.

``forward_sequence`` equals a loop of ``step`` (outputs, final state, gradients) with resets inside
the sequence and a carried-in state; resets isolate episodes; double backward through
``torch.func.functional_call`` works; ``make_core`` rejects unknown kinds.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from ssm_metarl_ray.config import MODELS, ModelConfig
from ssm_metarl_ray.models.registry import make_core

KINDS = list(MODELS)
D_IN = 5


def _core(kind, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(kind=kind, hidden_size=16, num_layers=2, state_size=8, num_heads=2, context_len=6)
    cfg.update(kw)
    return make_core(ModelConfig(**cfg), D_IN).to(dtype)


def _data(B, T, dtype, seed=1, p_done=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D_IN, generator=g, dtype=dtype)
    dones = (torch.rand(B, T, generator=g) < p_done).to(dtype)
    dones[0, 0] = 1.0  # reset at the very first step: the carried-in state must be dropped
    dones[1, T // 2] = 1.0
    dones[1, T // 2 + 1] = 1.0  # one-step episode
    return x, dones


def _state_loss(state, seed=2):
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for s in _flat(state):
        w = torch.randn(s.shape, generator=g, dtype=s.real.dtype)
        total = total + ((s.real + s.imag) * w).sum() if s.is_complex() else total + (s * w).sum()
    return total


def _run(core, x, dones, chunks, mode):
    """Run the core over ``x`` split into ``chunks`` (time lengths), carrying the state between them."""
    B = x.shape[0]
    state = core.initial_state(B)
    ys, t0 = [], 0
    for n in chunks:
        xs, ds = x[:, t0:t0 + n], dones[:, t0:t0 + n]
        if mode == "sequence":
            y, state = core.forward_sequence(xs, state, ds)
            ys.append(y)
        else:
            for x_t, d_t in zip(xs.unbind(1), ds.unbind(1)):
                y_t, state = core.step(x_t, state, d_t)
                ys.append(y_t.unsqueeze(1))
        t0 += n
    return torch.cat(ys, dim=1), state


def _outputs_and_grads(core, x, dones, chunks, mode):
    x = x.clone().requires_grad_()
    y, state = _run(core, x, dones, chunks, mode)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    loss = (y * w).sum() + _state_loss(state)
    params = [p for p in core.parameters()]
    grads = torch.autograd.grad(loss, params + [x], allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params + [x])]
    return y, state, grads


# A first chunk long enough for the chunked scan and several attention blocks, a one-step chunk, and
# a continuation: every chunk after the first starts from a non-trivial carried state.
CHUNKS = [23, 1, 30]


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_equals_step_loop_float64(kind):
    core = _core(kind)
    x, dones = _data(3, sum(CHUNKS), torch.float64)
    y_s, st_s, g_s = _outputs_and_grads(core, x, dones, CHUNKS, "sequence")
    y_l, st_l, g_l = _outputs_and_grads(core, x, dones, [sum(CHUNKS)], "step")
    torch.testing.assert_close(y_s, y_l, rtol=1e-9, atol=1e-9)
    assert len(_flat(st_s)) == len(_flat(st_l))
    for a, b in zip(_flat(st_s), _flat(st_l)):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    names = [n for n, _ in core.named_parameters()] + ["x"]
    for n, a, b in zip(names, g_s, g_l):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_equals_step_loop_float32_default_sizes(kind):
    torch.manual_seed(0)
    core = make_core(ModelConfig(kind=kind, context_len=16), D_IN)  # H=64, P=32, 2 layers
    assert core.output_dim == 64
    x, dones = _data(4, 50, torch.float32, p_done=0.05)
    with torch.no_grad():
        y_s, st_s = _run(core, x, dones, [20, 30], "sequence")
        y_l, st_l = _run(core, x, dones, [50], "step")
    assert y_s.dtype == torch.float32 and y_s.shape == (4, 50, 64)
    torch.testing.assert_close(y_s, y_l, rtol=1e-5, atol=1e-5)
    for a, b in zip(_flat(st_s), _flat(st_l)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_resets_isolate_episodes(kind):
    """After a reset, outputs depend neither on earlier inputs nor on the carried-in state."""
    core = _core(kind)
    B, T, r = 2, 20, 9
    x, _ = _data(B, T, torch.float64, seed=4)
    dones = torch.zeros(B, T, dtype=torch.float64)
    dones[:, r] = 1.0
    x2 = x.clone()
    x2[:, :r] = torch.randn(B, r, D_IN, dtype=torch.float64)
    # A non-trivial carried-in state: the end state of an unrelated sequence.
    _, warm = core.forward_sequence(torch.randn(B, 11, D_IN, dtype=torch.float64),
                                    core.initial_state(B), torch.zeros(B, 11, dtype=torch.float64))
    with torch.no_grad():
        y1, s1 = core.forward_sequence(x, core.initial_state(B), dones)
        y2, s2 = core.forward_sequence(x2, warm, dones)
        y3, _ = _run(core, x2, dones, [T], "step")
    torch.testing.assert_close(y1[:, r:], y2[:, r:], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y1[:, r:], y3[:, r:], rtol=1e-10, atol=1e-10)
    for a, b in zip(_flat(s1), _flat(s2)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    if kind != "mlp":  # the inputs before the reset do matter before it
        assert not torch.allclose(y1[:, :r], y2[:, :r])


@pytest.mark.parametrize("kind", KINDS)
def test_bool_dones_and_initial_state(kind):
    core = _core(kind, dtype=torch.float32)
    x, dones = _data(2, 9, torch.float32)
    y_f, _ = core.forward_sequence(x, core.initial_state(2), dones)
    y_b, _ = core.forward_sequence(x, core.initial_state(2), dones.bool())
    y_t, _ = core.step(x[:, 0], core.initial_state(2), dones[:, 0].bool())
    torch.testing.assert_close(y_f, y_b)
    torch.testing.assert_close(y_t, y_f[:, 0], rtol=1e-5, atol=1e-5)
    for s in _flat(core.initial_state(2)):
        assert s.shape[0] == 2 and not s.requires_grad and bool((s == 0).all())


@pytest.mark.parametrize("kind", KINDS)
def test_maml_double_backward_functional_call(kind):
    """One inner policy-gradient-like step, then the outer gradient through it (second order)."""
    core = _core(kind)
    x, dones = _data(3, 17, torch.float64, seed=6)
    params = {n: p.detach().clone().requires_grad_() for n, p in core.named_parameters()}
    state = core.initial_state(3)

    def loss_fn(p, xs):
        y, _ = functional_call(core, p, (xs, state, dones))
        return (y.sin() * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum()

    inner = loss_fn(params, x)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
    adapted = {n: p - 0.05 * g if g is not None else p for (n, p), g in zip(params.items(), grads)}
    outer = loss_fn(adapted, x.flip(1))
    outer_grads = torch.autograd.grad(outer, list(params.values()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in outer_grads)
    # The second-order term is really there: it differs from the first-order (detached) meta-gradient.
    fo = {n: (p - 0.05 * g.detach()) for (n, p), g in zip(params.items(), grads)}
    fo_grads = torch.autograd.grad(loss_fn(fo, x.flip(1)), list(params.values()))
    assert any(not torch.allclose(a, b) for a, b in zip(outer_grads, fo_grads))


@pytest.mark.parametrize("kind", KINDS)
def test_gradgradcheck_inputs(kind):
    """Exact second derivatives w.r.t. the inputs, through a carried state and a reset (tiny sizes)."""
    core = _core(kind, hidden_size=4, num_layers=1, state_size=2, num_heads=2, context_len=3)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, D_IN, generator=g, dtype=torch.float64, requires_grad=True)
    dones = torch.zeros(2, 6, dtype=torch.float64)
    dones[1, 3] = 1.0
    _, warm = core.forward_sequence(torch.randn(2, 4, D_IN, generator=g, dtype=torch.float64),
                                    core.initial_state(2), torch.zeros(2, 4, dtype=torch.float64))

    def f(xs):
        return core.forward_sequence(xs, warm, dones)[0]

    assert torch.autograd.gradgradcheck(f, (x,))


def test_ssm_eigenvalue_ring_follows_the_config():
    """model.ssm_r_min sets the inner radius of the LRU's initial eigenvalue ring (outer radius 0.999)."""
    torch.manual_seed(0)
    for r_min in (0.0, 0.5, 0.9):
        core = make_core(ModelConfig(kind="ssm", hidden_size=16, num_layers=2, state_size=256, ssm_r_min=r_min), 5)
        mags = torch.cat([layer.eigenvalues().abs() for layer in core.layers])
        assert mags.min() >= r_min - 1e-6 and mags.max() <= 0.999 + 1e-6
        assert mags.min() < r_min + 0.1  # the ring is filled from its inner edge


def test_ssm_input_layer_all_step_paths_agree():
    """model.ssm_input_hidden puts a tanh layer before the SSM's input projection; the sequence forward, the
    autograd step, the no-grad fast step, PackedStep and the grouped step all apply it (float64, resets)."""
    from ssm_metarl_ray.models.grouped_step import GroupedPolicy
    from ssm_metarl_ray.models.packed_step import PackedStep
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(11)
    plain = Policy(5, 3, False, ModelConfig(kind="ssm", hidden_size=16, state_size=8))
    assert plain.core.input_mlp is None
    policy = Policy(5, 3, False, ModelConfig(kind="ssm", hidden_size=16, state_size=8, ssm_input_hidden=24)).double()
    assert policy.core.input_mlp.weight.shape == (24, policy.input_dim)
    assert policy.core.encoder.weight.shape == (16, 24)
    B, T = 4, 12
    x = torch.randn(B, T, policy.input_dim, dtype=torch.float64)
    dones = (torch.rand(B, T) < 0.2).double()
    dones[:, 0] = 1.0
    seq, _ = policy.forward_sequence(x, policy.initial_state(B), dones)
    packed = PackedStep(policy)
    s_auto, s_fast, s_packed = policy.initial_state(B), policy.initial_state(B), packed.initial_state(B)
    for t in range(T):
        auto, s_auto = policy.step(x[:, t], s_auto, dones[:, t])
        with torch.no_grad():
            fast, s_fast = policy.step(x[:, t], s_fast, dones[:, t])
            pk, s_packed = packed.step(x[:, t], s_packed, dones[:, t])
        for out in (auto, fast, pk):
            torch.testing.assert_close(out.dist_params, seq.dist_params[:, t], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(out.value, seq.value[:, t], rtol=1e-10, atol=1e-10)
    sets = [{n: p.detach() + 0.1 * g * torch.randn_like(p) for n, p in policy.named_parameters()} for g in range(3)]
    grouped, reference = GroupedPolicy(policy, sets), GroupedPolicy(policy, sets, batched=False)
    s_g, s_r = grouped.initial_state(6), reference.initial_state(6)
    for t in range(T):
        xt, dt = x[:, t].repeat(2, 1)[:6], dones[:, t].repeat(2)[:6]
        out, s_g = grouped.step(xt, s_g, dt)
        ref, s_r = reference.step(xt, s_r, dt)
        torch.testing.assert_close(out.dist_params, ref.dist_params, rtol=1e-10, atol=1e-10)


def test_unknown_kind_raises():
    with pytest.raises(ValueError) as err:
        make_core(ModelConfig(kind="tcn"), D_IN)
    msg = str(err.value)
    assert "\n" not in msg and "tcn" in msg
    assert all(k in msg for k in KINDS)


def test_mlp_init_xavier_is_rllabs_and_bad_values_are_named():
    """``mlp_init="xavier"``: MAML 2017's rllab layers (Xavier-uniform weights, zero biases) on every hidden
    layer; torch's default keeps nonzero biases; an unknown value is a ConfigError naming the allowed ones."""
    from ssm_metarl_ray.config import ConfigError, ExperimentConfig

    torch.manual_seed(0)
    xav = make_core(ModelConfig(kind="mlp", hidden_size=100, activation="relu", mlp_init="xavier"), 20)
    torch.manual_seed(0)
    default = make_core(ModelConfig(kind="mlp", hidden_size=100, activation="relu"), 20)
    for lin, ref in zip(xav._linears, default._linears):
        lin, ref = lin.requires_grad_(False), ref.requires_grad_(False)
        fan_out, fan_in = lin.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert float(lin.bias.abs().max()) == 0.0 and float(ref.bias.abs().max()) > 0.0
        assert float(lin.weight.abs().max()) <= bound
        assert float(lin.weight.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.1)  # U(-b, b): std b / sqrt(3)
    with pytest.raises(ConfigError, match="mlp_init 'he'; allowed: torch, xavier"):
        ExperimentConfig.from_dict({"model": {"mlp_init": "he"}})


@pytest.mark.parametrize("kind", KINDS)
def test_state_structure_and_parameters_are_real(kind):
    core = _core(kind, dtype=torch.float32)
    assert core.output_dim == 16
    assert all(not p.is_complex() for p in core.parameters())
    st = core.initial_state(3)
    if kind == "mlp":
        assert st == ()
    elif kind == "ssm":
        assert len(st) == 2 and all(s.shape == (3, 8) and s.dtype == torch.complex64 for s in st)
        assert all(s.dtype == torch.complex128 for s in core.double().initial_state(3))
    elif kind == "lstm":
        assert len(st) == 2 and all(len(s) == 2 and s[0].shape == (3, 16) for s in st)
    elif kind == "gru":
        assert len(st) == 2 and all(s.shape == (3, 16) for s in st)
    else:
        count, valid, kv = st
        assert count.shape == (3,) and valid.shape == (3, 5) and len(kv) == 2
        assert kv[0][0].shape == (3, 5, 16)


def test_transformer_attention_window():
    """Step t sees at most ``context_len`` steps (itself included) of its own episode."""
    L = 4
    core = _core("transformer", num_layers=1, context_len=L)  # one layer: receptive field = window
    B, T = 2, 15
    x, _ = _data(B, T, torch.float64, seed=8)
    dones = torch.zeros(B, T, dtype=torch.float64)
    dones[:, 0] = 1.0
    x2 = x.clone()
    x2[:, 5] += 1.0
    with torch.no_grad():
        y1, _ = core.forward_sequence(x, core.initial_state(B), dones)
        y2, _ = core.forward_sequence(x2, core.initial_state(B), dones)
    changed = (y1 - y2).abs().amax(dim=(0, 2)) > 1e-12
    assert changed.tolist() == [5 <= t < 5 + L for t in range(T)]


# ---- step fast paths (no autograd: rollouts) ----------------------------------------------------------


def _clone_state(state):
    return tuple(_clone_state(s) for s in state) if isinstance(state, tuple) else state.clone()


def _assert_states_equal(a, b, **tol):
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x, y, **tol)


def _step_loop(core, x, dones, state, grad):
    """Step through (B, T) under no_grad (the fast paths) or with autograd on (the plain paths)."""
    ys, states = [], []
    with torch.set_grad_enabled(grad):
        for x_t, d_t in zip(x.unbind(1), dones.unbind(1)):
            y, state = core.step(x_t, state, d_t)
            ys.append(y.detach())
            states.append(state)
    return torch.stack(ys, 1), states


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_step_equals_autograd_step(kind):
    """The no-autograd step path (cached transforms, fused cells, in-place key/value appends, skipped
    resets) gives the autograd path's outputs and states, over more steps than a key/value buffer holds,
    and never changes a state it returned earlier."""
    core = _core(kind)
    x, dones = _data(3, 100, torch.float64, seed=9, p_done=0.03)
    state0 = core.initial_state(3)
    y_fast, st_fast = _step_loop(core, x, dones, state0, grad=False)
    y_ref, st_ref = _step_loop(core, x, dones, state0, grad=True)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    # Every state handed out is still intact after all later steps (compared after the whole loop).
    for s_fast, s_ref in zip(st_fast, st_ref):
        _assert_states_equal(s_fast, _clone_state(s_ref), rtol=1e-12, atol=1e-12)
    if kind == "transformer":  # the key/value buffers really were appended to in place
        shared = sum(a[2][0][0]._base is not None and a[2][0][0]._base is b[2][0][0]._base
                     for a, b in zip(st_fast[:-1], st_fast[1:]))
        assert shared > 50


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_step_branching_from_one_state(kind):
    """Stepping the same state twice (e.g. two candidate actions) gives independent results."""
    core = _core(kind)
    x, dones = _data(2, 12, torch.float64, seed=10, p_done=0.0)
    dones[:, 0] = 1.0
    with torch.no_grad():
        _, states = _step_loop(core, x, dones, core.initial_state(2), grad=False)
        s = states[-1]
        a = torch.randn(2, D_IN, dtype=torch.float64)
        b = torch.randn(2, D_IN, dtype=torch.float64)
        no_done = torch.zeros(2, dtype=torch.float64)
        ya, sa = core.step(a, s, no_done)
        sa_copy = _clone_state(sa)
        yb, sb = core.step(b, s, no_done)
        ya2, sa2 = core.step(x[:, 0], sa, no_done)  # continue the first branch after the second
        yb2, _ = core.step(x[:, 0], sb, no_done)
    _assert_states_equal(sa, sa_copy, rtol=0, atol=0)
    with torch.enable_grad():  # reference: plain paths
        ya_r, sa_r = core.step(a, s, no_done)
        yb_r, sb_r = core.step(b, s, no_done)
        ya2_r, _ = core.step(x[:, 0], sa_r, no_done)
        yb2_r, _ = core.step(x[:, 0], sb_r, no_done)
    for got, ref in ((ya, ya_r), (yb, yb_r), (ya2, ya2_r), (yb2, yb2_r)):
        torch.testing.assert_close(got, ref.detach(), rtol=1e-12, atol=1e-12)


class _StepWrapper(torch.nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, x_t, state, done_t):
        return self.core.step(x_t, state, done_t)


def _ref_step(core, x_t, state, d_t):
    with torch.enable_grad():
        y, s = core.step(x_t, state, d_t)
    return y.detach(), s


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_step_sees_parameter_changes(kind):
    """Memoised parameter transforms are recomputed whenever the parameters change: in-place updates
    (optimizer steps, ``copy_``, ``load_state_dict``), ``functional_call`` substitutes and ``.double()``."""
    core = _core(kind, dtype=torch.float32)
    B = 3
    x, dones = _data(B, 4, torch.float32, seed=12, p_done=0.0)
    state = core.initial_state(B)
    d0 = torch.zeros(B)

    def check(c, st=state, xx=x[:, 0], d=d0):
        with torch.no_grad():
            y, s = c.step(xx, st, d)
        y_r, s_r = _ref_step(c, xx, st, d)
        torch.testing.assert_close(y, y_r, rtol=1e-6, atol=1e-6)
        _assert_states_equal(s, s_r, rtol=1e-6, atol=1e-6)
        return y

    y0 = check(core)
    # An optimizer step (in-place, under no_grad).
    opt = torch.optim.SGD(core.parameters(), lr=0.5)
    core.zero_grad()
    core.forward_sequence(x, state, dones)[0].pow(2).sum().backward()
    opt.step()
    y1 = check(core)
    assert not torch.allclose(y0, y1)
    # copy_ under no_grad, as the rollout worker does with adapted parameters.
    with torch.no_grad():
        for p in core.parameters():
            p.copy_(p + 0.05 * torch.randn_like(p))
    y2 = check(core)
    assert not torch.allclose(y1, y2)
    # load_state_dict from another model.
    other = _core(kind, dtype=torch.float32, seed=5)
    core.load_state_dict(other.state_dict())
    y3 = check(core)
    torch.testing.assert_close(y3, check(other))
    # functional_call substitutes parameters for one call; the module's own parameters afterwards.
    wrapper = _StepWrapper(core)
    params = {"core." + n: p.detach() * 0.9 for n, p in core.named_parameters()}
    with torch.no_grad():
        y_sub, _ = functional_call(wrapper, params, (x[:, 0], state, d0))
        y_own, _ = core.step(x[:, 0], state, d0)
    with torch.enable_grad():
        y_sub_r, _ = functional_call(wrapper, params, (x[:, 0], state, d0))
    torch.testing.assert_close(y_sub, y_sub_r.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y_own, y3)
    if kind != "mlp":
        assert not torch.allclose(y_sub, y_own)
    # Conversion to float64 (new storage, new dtype).
    core.double()
    check(core, st=core.initial_state(B), xx=x[:, 0].double(), d=d0.double())


@pytest.mark.parametrize("kind", KINDS)
def test_inference_mode_step_equals_no_grad_step(kind):
    core = _core(kind)
    x, dones = _data(3, 60, torch.float64, seed=14, p_done=0.05)
    y_ref, _ = _step_loop(core, x, dones, core.initial_state(3), grad=False)
    ys = []
    with torch.inference_mode():
        state = core.initial_state(3)
        for x_t, d_t in zip(x.unbind(1), dones.unbind(1)):
            y, state = core.step(x_t, state, d_t)
            ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), y_ref, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "ssm"])
def test_observation_only_policy_ignores_reward_and_action_inputs(kind):
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden_size=8, num_layers=1, state_size=4, observation_only=True)
    pol = Policy(obs_dim=3, act_dim=2, discrete=False, cfg=cfg).double()
    x = torch.randn(2, 5, 3 + 2 + 2, dtype=torch.float64)
    dones = torch.zeros(2, 5, dtype=torch.float64)
    dones[:, 0] = 1
    seq, _ = pol.forward_sequence(x, pol.initial_state(2), dones)
    x2 = x.clone()
    x2[..., 3:] = torch.randn(2, 5, 4, dtype=torch.float64)  # other previous action / reward / done features
    seq2, _ = pol.forward_sequence(x2, pol.initial_state(2), dones)
    torch.testing.assert_close(seq.dist_params, seq2.dist_params)
    state, steps = pol.initial_state(2), []
    for t in range(5):  # step == sequence
        out, state = pol.step(x[:, t], state, dones[:, t])
        steps.append(out.dist_params)
    torch.testing.assert_close(torch.stack(steps, 1), seq.dist_params)


@pytest.mark.parametrize("kind", ["ssm", "lstm", "transformer"])
@pytest.mark.parametrize("history_only", [False, True])
def test_head_obs_heads_read_the_observation_and_step_equals_sequence(kind, history_only):
    """``head_obs``: the heads are sized for and given [core output, observation] (``head_input``), and
    ``step`` == ``forward_sequence`` with them; ``history_only``: the core's input is everything but the
    observation."""
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(1)
    cfg = ModelConfig(kind=kind, hidden_size=8, num_layers=1, state_size=4, num_heads=2, context_len=6,
                      head_hidden=4, head_obs=True, history_only=history_only)
    pol = Policy(obs_dim=3, act_dim=2, discrete=False, cfg=cfg).double()
    assert pol.core_input_dim == (2 + 2 if history_only else 3 + 2 + 2)
    assert pol.actor[0].in_features == 8 + 3 and pol.critic[0].in_features == 8 + 3
    x = torch.randn(2, 5, pol.input_dim, dtype=torch.float64)
    dones = torch.zeros(2, 5, dtype=torch.float64)
    dones[:, 0] = 1
    seq, _ = pol.forward_sequence(x, pol.initial_state(2), dones)
    state, steps = pol.initial_state(2), []
    for t in range(5):
        out, state = pol.step(x[:, t], state, dones[:, t])
        steps.append(out.dist_params)
    torch.testing.assert_close(torch.stack(steps, 1), seq.dist_params, rtol=1e-9, atol=1e-9)
    y = torch.randn(2, 8, dtype=torch.float64)
    head_in = pol.head_input(y, x[:, 0])
    torch.testing.assert_close(head_in, torch.cat([y, x[:, 0, :3]], -1))
    torch.testing.assert_close(pol.core_input(x), x[..., 3:] if history_only else x)


@pytest.mark.parametrize("kind", ["ssm", "mlp"])
def test_history_gate_scales_the_core_output_the_heads_read_and_step_equals_sequence(kind):
    """``history_gate``: the heads read [gate * core output, observation] (a gate of 0 leaves them the
    observation alone), and ``step`` == ``forward_sequence``."""
    from ssm_metarl_ray.models.policy import GATE_STEPS, Policy

    torch.manual_seed(1)
    cfg = ModelConfig(kind=kind, hidden_size=8, num_layers=1, state_size=4, head_hidden=4, head_obs=True,
                      history_gate=True)
    pol = Policy(obs_dim=3, act_dim=2, discrete=False, cfg=cfg).double()
    assert float(pol.history_gate.detach()) == 1.0 and pol.history_gate_deltas.shape == (GATE_STEPS,)
    x = torch.randn(2, 5, pol.input_dim, dtype=torch.float64)
    dones = torch.zeros(2, 5, dtype=torch.float64)
    dones[:, 0] = 1
    with torch.no_grad():
        pol.history_gate.fill_(0.0)
    out, y, _ = pol.forward_with_features(x, pol.initial_state(2), dones)
    torch.testing.assert_close(out.dist_params, pol._heads(pol.head_input(torch.zeros_like(y), x)).dist_params)
    with torch.no_grad():
        pol.history_gate.fill_(0.6)
    seq, y, _ = pol.forward_with_features(x, pol.initial_state(2), dones)
    torch.testing.assert_close(seq.dist_params, pol._heads(pol.head_input(0.6 * y, x)).dist_params)
    state, steps = pol.initial_state(2), []
    for t in range(5):
        step_out, state = pol.step(x[:, t], state, dones[:, t])
        steps.append(step_out.dist_params)
    torch.testing.assert_close(torch.stack(steps, 1), seq.dist_params, rtol=1e-9, atol=1e-9)


def test_history_gate_needs_head_obs():
    from ssm_metarl_ray.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match="model.history_gate needs model.head_obs"):
        ExperimentConfig(model=ModelConfig(history_gate=True)).validate()


def test_history_only_needs_head_obs():
    from ssm_metarl_ray.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match="model.history_only needs model.head_obs"):
        ExperimentConfig(model=ModelConfig(history_only=True)).validate()
    with pytest.raises(ConfigError, match="excludes model.observation_only"):
        ExperimentConfig(model=ModelConfig(history_only=True, head_obs=True, observation_only=True)).validate()


@pytest.mark.parametrize("kind, discrete, head_hidden, obs_only, head_obs", [
    ("ssm", False, 0, False, False), ("ssm", True, 8, False, False), ("mlp", False, 8, False, False),
    ("mlp", True, 0, True, False), ("ssm", False, 0, True, False), ("gru", False, 0, False, False),
    ("ssm", False, 8, False, True), ("ssm", True, 0, True, True), ("gru", False, 8, False, True),
    ("ssm", False, 8, "history", True), ("mlp", False, 0, "history", True), ("ssm", False, 8, "history", "gate"),
    ("ssm", False, 0, False, "gate"), ("gru", False, 8, False, "gate")])
def test_grouped_step_equals_a_step_per_parameter_set(kind, discrete, head_hidden, obs_only, head_obs):
    """GroupedPolicy's batched step (G parameter sets, one call per op) gives what G calls of Policy.step
    with each set give (the reference loop, which cores without a batched step use), resets included.
    ``head_obs`` "gate": with ``history_gate`` too (a different gate per set)."""
    from ssm_metarl_ray.models.grouped_step import GroupedPolicy
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(3)
    cfg = ModelConfig(kind=kind, hidden_size=16, num_layers=2, state_size=8, head_hidden=head_hidden,
                      observation_only=obs_only is True, history_only=obs_only == "history",
                      head_obs=bool(head_obs), history_gate=head_obs == "gate")
    policy = Policy(5, 3, discrete, cfg).double()
    G, k, T = 3, 4, 12
    sets = [{n: p.detach() + 0.1 * g * torch.randn_like(p) for n, p in policy.named_parameters()} for g in range(G)]
    x = torch.randn(T, G * k, policy.input_dim, dtype=torch.float64)
    dones = (torch.rand(T, G * k) < 0.15).double()
    dones[0] = 1.0
    grouped, reference = GroupedPolicy(policy, sets), GroupedPolicy(policy, sets, batched=False)
    assert grouped.batched == (kind in ("ssm", "mlp"))
    s_fast, s_ref = grouped.initial_state(G * k), reference.initial_state(G * k)
    for t in range(T):
        out, s_fast = grouped.step(x[t], s_fast, dones[t])
        ref, s_ref = reference.step(x[t], s_ref, dones[t])
        torch.testing.assert_close(out.dist_params, ref.dist_params, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.value, ref.value, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("discrete, head_hidden, obs_only, head_obs", [
    (False, 0, False, False), (True, 8, False, False), (False, 8, True, False), (False, 8, False, True),
    (False, 0, "history", True), (False, 8, False, "gate"), (True, 0, "history", "gate")])
@pytest.mark.parametrize("B, small_batch_max", [(4, 0), (4, 4), (1, 2)])
def test_packed_step_equals_policy_step(kind, discrete, head_hidden, obs_only, head_obs, B, small_batch_max):
    """PackedStep (weights packed once; heads in one addmm; the SSM in real form, and in the fused
    small-batch form when B <= small_batch_max) gives what Policy.step gives, outputs and states, over a
    sequence with episode resets. ``head_obs`` "gate": with ``history_gate`` too, at a gate of 0.37."""
    from ssm_metarl_ray.models.packed_step import PackedStep
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(5)
    cfg = ModelConfig(kind=kind, hidden_size=16, num_layers=2, state_size=8, num_heads=2, context_len=6,
                      head_hidden=head_hidden, observation_only=obs_only is True,
                      history_only=obs_only == "history", head_obs=bool(head_obs), history_gate=head_obs == "gate")
    policy = Policy(5, 3, discrete, cfg).double()
    if not discrete:
        with torch.no_grad():
            policy.log_std.add_(0.3)  # a log-std that is not the default
    if cfg.history_gate:
        with torch.no_grad():
            policy.history_gate.fill_(0.37)
    T = 14
    x = torch.randn(T, B, policy.input_dim, dtype=torch.float64)
    dones = (torch.rand(T, B) < 0.15).double()
    dones[0] = 1.0
    dones[7] = 1.0  # a reset after t = 0 in every row (B = 1 too)
    packed = PackedStep(policy, small_batch_max)
    s_fast, s_ref = packed.initial_state(B), policy.initial_state(B)
    if kind == "ssm":  # the layout asked for: [h, y] per layer when fused, else h
        assert s_fast[0].shape == (B, 2 * cfg.state_size + (cfg.hidden_size if B <= small_batch_max else 0))
    kept = []  # every step's outputs and state as returned, checked after the sequence: none is a buffer
    with torch.no_grad():  # that a later step writes into (the fused SSM layers reuse scratch buffers)
        for t in range(T):
            out, s_fast = packed.step(x[t], s_fast, dones[t])
            ref, s_ref = policy.step(x[t], s_ref, dones[t])
            torch.testing.assert_close(out.dist_params, ref.dist_params, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(out.value, ref.value, rtol=1e-10, atol=1e-10)
            _assert_states_equal(packed.policy_state(s_fast), s_ref, rtol=1e-10, atol=1e-10)
            returned = (out.dist_params, out.value, *_flat(s_fast))
            kept.append((returned, tuple(t.clone() for t in returned)))
    for returned, copy in kept:
        for a, b in zip(returned, copy):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kind", MODELS)
def test_step_with_no_done_tensor_equals_all_zero_dones(kind):
    """``done_t=None`` (what rollouts pass after t = 0: no row starts an episode) gives what an all-zero
    ``done_t`` gives on every step path: Policy.step with and without autograd, PackedStep, GroupedPolicy
    (batched and the reference loop); outputs and states."""
    from ssm_metarl_ray.models.grouped_step import GroupedPolicy
    from ssm_metarl_ray.models.packed_step import PackedStep
    from ssm_metarl_ray.models.policy import Policy

    torch.manual_seed(8)
    cfg = ModelConfig(kind=kind, hidden_size=16, num_layers=2, state_size=8, num_heads=2, context_len=6)
    policy = Policy(5, 3, False, cfg).double()
    B, T = 4, 9
    x = torch.randn(T, B, policy.input_dim, dtype=torch.float64)
    first, zeros = torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    sets = [{n: p.detach() + 0.1 * g * torch.randn_like(p) for n, p in policy.named_parameters()} for g in range(2)]
    steppers = [policy, PackedStep(policy, 0), PackedStep(policy, B), GroupedPolicy(policy, sets),
                GroupedPolicy(policy, sets, batched=False)]
    for stepper in steppers:
        for grad in (True, False):
            if grad and stepper is not policy:
                continue
            with torch.set_grad_enabled(grad):
                s_none, s_zero = stepper.initial_state(B), stepper.initial_state(B)
                for t in range(T):
                    out_none, s_none = stepper.step(x[t], s_none, first if t == 0 else None)
                    out_zero, s_zero = stepper.step(x[t], s_zero, first if t == 0 else zeros)
                    torch.testing.assert_close(out_none.dist_params, out_zero.dist_params, rtol=0, atol=0)
                    torch.testing.assert_close(out_none.value, out_zero.value, rtol=0, atol=0)
                flat_none, flat_zero = _flat(s_none), _flat(s_zero)
                assert len(flat_none) == len(flat_zero)
                assert all(torch.equal(a, b) for a, b in zip(flat_none, flat_zero))


def _flat(state):
    if isinstance(state, (tuple, list)):
        return [t for s in state for t in _flat(s)]
    return [torch.view_as_real(state) if state.is_complex() else state]
