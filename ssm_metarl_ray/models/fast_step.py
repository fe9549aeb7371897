"""Fast step paths of the recurrent cores for rollouts (no autograd), beside their references.

The reference ``step`` of each core (``models/ssm.py``, ``rnn.py``, ``transformer.py``) is plain
differentiable torch. When :func:`no_autograd` holds (rollouts under ``torch.no_grad()``) a core may take a
fast path that runs the same ops with fewer dispatcher calls: parameters read straight from the modules'
``_parameters`` dicts (where ``torch.func.functional_call`` puts substitutes too), derived tensors memoised
by :func:`cached_transform`, no-op resets skipped. ``tests/test_models.py`` checks every fast path against
its reference (``test_no_grad_step_equals_autograd_step`` and the tests after it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def no_autograd(x: Tensor) -> bool:
    """True when nothing can differentiate through an op on ``x``: grad mode is off, ``x`` is a plain
    tensor (not wrapped by a ``torch.func`` transform) and no forward-AD level is open.

    Step-mode fast paths (cached parameter transforms, skipped no-op resets, in-place ops on fresh
    temporaries) are taken only then, i.e. in rollouts under ``torch.no_grad()``; under autograd the
    plain differentiable code runs.
    """
    return (not torch.is_grad_enabled() and not torch._C._functorch.is_functorch_wrapped_tensor(x)
            and getattr(torch.autograd.forward_ad, "_current_level", -1) < 0)


# owner module -> (weak refs to the parameters, their (version, data_ptr, dtype, device), value)
_DERIVED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()

_T = TypeVar("_T")


def cached_transform(owner: nn.Module, params: Sequence[Tensor], fn: Callable[..., _T]) -> _T:
    """``fn(*params)``, memoised per ``owner`` while ``params`` are the same tensor objects with unchanged
    version counters, data pointers, dtypes and devices. Call it only when :func:`no_autograd` holds.

    Parameters change between calls (optimizer steps, ``load_state_dict``, ``p.copy_`` in the rollout
    worker, ``functional_call`` substitutions, ``.double()``): each of these changes the key, so the
    value is recomputed. Not seen: in-place writes through ``p.data`` (``p.data`` has its own version
    counter) - update parameters with ``p.copy_`` under ``torch.no_grad()`` instead.
    The memo lives in a module-level weak dictionary, so it never enters ``state_dict``, pickling or
    ``deepcopy``, and holds only weak references to the parameters.
    """
    try:
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
    except RuntimeError:  # inference tensors have no version counter
        return fn(*params)
    entry = _DERIVED.get(owner)
    if entry is not None and entry[1] == key and all(r() is p for r, p in zip(entry[0], params)):
        return entry[2]
    value = fn(*params)
    _DERIVED[owner] = (tuple(weakref.ref(p) for p in params), key, value)
    return value


def lru_step_fast(layer: Any, x: Tensor, h: Tensor, keep_t: Tensor | None) -> tuple[Tensor, Tensor]:
    """:meth:`LRULayer.step` without autograd: the same ops, parameters read straight from the ``_parameters``
    dicts (where ``functional_call`` puts substitutes too), lambda and gamma*B memoised."""
    p: dict[str, Any] = layer._parameters  # raw dicts: their values are set (not None) here
    mods: dict[str, Any] = layer._modules
    n, g = mods["norm"], mods["glu"]
    lam, Bg = cached_transform(layer, (p["nu_log"], p["theta_log"], p["gamma_log"], p["B"]), layer.derive)
    npar, gpar = n._parameters, g._parameters
    u = torch.layer_norm(x, (layer.hidden_size,), npar["weight"], npar["bias"], n.eps)
    bu = F.linear(u, Bg)
    Bsz, P = bu.shape[0], layer.state_size
    h = torch.addcmul(torch.view_as_complex(bu.view(Bsz, P, 2)), lam if keep_t is None else lam * keep_t, h)
    y = torch.addcmul(F.linear(torch.view_as_real(h).view(Bsz, 2 * P), p["C"]), p["D"], u)
    z = F.linear(F.gelu(y, approximate="tanh"), gpar["weight"], gpar["bias"])
    return x + F.glu(z, dim=-1), h


def ssm_step_fast(core: Any, x_t: Tensor, state: Any,
                  done_t: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``SSMCore.step`` without autograd (rollouts): same ops; parameters read from the ``_parameters``
    dicts; the reset mask is skipped when no row is done (lambda * 1 == lambda) or ``done_t`` is None."""
    mods: dict[str, Any] = core._modules  # raw dict: its values are set (not None) here
    enc, norm = mods["encoder"]._parameters, mods["out_norm"]
    if core.input_mlp is not None:
        pre = core.input_mlp._parameters
        x_t = torch.tanh(F.linear(x_t, pre["weight"], pre["bias"]))
    x = F.linear(x_t, enc["weight"], enc["bias"])
    keep = (1.0 - done_t.to(x.dtype)).unsqueeze(-1) if done_t is not None and bool(done_t.any()) else None
    new_state = []
    for layer, h in zip(mods["layers"]._modules.values(), state):
        x, h = lru_step_fast(layer, x, h, keep)
        new_state.append(h)
    npar = norm._parameters
    return torch.layer_norm(x, (core.hidden_size,), npar["weight"], npar["bias"], norm.eps), tuple(new_state)
