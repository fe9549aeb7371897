"""Causal Transformer core with episode-local, windowed attention and a step-mode key/value cache.

Step t attends to steps s with ``t - context_len < s <= t`` that belong to the **same episode**
(no attention across a ``done``). Positional encoding is sinusoidal in the step-within-episode index,
computed from the dones (plus the count carried in the state) so step and sequence mode agree.

Block (pre-norm): ``x <- x + MHA(LN(x))``, ``x <- x + MLP(LN(x))``; input projection D_in -> H first,
final LayerNorm last. Attention is written with plain tensor ops (no fused SDPA kernel) so it is
differentiable twice.

State ``(count, valid, kv)``, every tensor with leading dim B, W = context_len - 1:

* ``count`` (B,): steps already seen in the current episode (position of the next step);
* ``valid`` (B, W): 1.0 where a cache slot holds a step of the current episode (oldest first);
* ``kv``: tuple of ``num_layers`` pairs ``(k, v)``, each (B, W, H): projected keys/values of the last
  W steps (heads concatenated).

``reset_state`` zeroes all of it, which is exactly the initial state. Sequence mode splits queries into
blocks of ``context_len`` and gives each block only the ``context_len - 1 + block`` keys it can see, so
memory is O(B T context_len), not O(B T^2).

Step mode computes all heads with two plain ``bmm`` calls on the (B, W+1, H) key/value tensors, without
splitting them into heads (which would copy the cache): the query becomes a block-diagonal (B, nh, H)
matrix (row n holds head n's features, pre-scaled by 1/sqrt(dh), zeros elsewhere), so row n of
``Q K^T`` is head n's scores, and head n's output is the n-th diagonal block of ``softmax(.) V``. The
positional frequencies, the head mask and the block index are built once per (size, dtype, device).
Without autograd (rollouts), the new key/value is appended in place after the cache, which is a window
of a larger buffer with spare slots (see :func:`_append_kv`): no O(W) copy and, above all, no fresh
(B, W+1, H) allocation per step (on Linux, glibc maps such blocks afresh each time and page faults
dominated the step: ~0.6 ms per cache tensor at B=64). Under autograd ``cat`` is used. The state keeps
the "oldest first" layout shared with sequence mode, and the reset multiply is skipped when no row is
done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from ssm_metarl_ray.models.base import State, reset_state
from ssm_metarl_ray.models.fast_step import no_autograd

# Constant tensors or tuples of them (no parameters involved) keyed by (what, sizes, dtype, device).
_CONSTANTS: dict[tuple, Any] = {}

# The state (count, valid, kv) of the module docstring.
_KV = tuple[tuple[Tensor, Tensor], ...]


def _frequencies(half: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    key = ("freqs", half, dtype, device)
    f = _CONSTANTS.get(key)
    if f is None:
        with torch.no_grad():
            f = torch.exp(torch.arange(half, dtype=dtype, device=device) * (-math.log(10000.0) / half))
        _CONSTANTS[key] = f
    return f


def _head_constants(nh: int, dh: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """(mask (nh, H): 1/sqrt(dh) on head n's features in row n, 0 elsewhere;
    index (H,) into a flattened (nh, H) block matrix picking the diagonal blocks, heads concatenated)."""
    key = ("heads", nh, dh, dtype, device)
    c = _CONSTANTS.get(key)
    if c is None:
        H = nh * dh
        with torch.no_grad():
            mask = torch.zeros(nh, H, dtype=dtype, device=device)
            for n in range(nh):
                mask[n, n * dh:(n + 1) * dh] = 1.0 / math.sqrt(dh)
            index = torch.tensor([n * H + n * dh + j for n in range(nh) for j in range(dh)], device=device)
        c = _CONSTANTS[key] = (mask, index)
    return c


# Step-mode key/value buffers (B, capacity, H) -> index of their first unwritten slot.
_BUFFER_END: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _append_kv(cache: Tensor, new: Tensor) -> Tensor:
    """``cat([cache, new[:, None]], 1)`` as a (B, W+1, H) view of a buffer; without autograd only.

    If ``cache`` (B, W, H) is the newest window of a buffer made here (it ends at the buffer's first
    unwritten slot, and a slot is left), ``new`` (B, H) is written into that slot: O(B H) and no
    allocation. Otherwise a buffer with ``W + 32 + W`` slots is made and the cache copied into it (once
    every ~W + 32 steps in a rollout). Only slots past every window handed out are ever written, so
    earlier states stay valid, and stepping one state twice copies instead of overwriting.
    """
    B, W, H = cache.shape
    base = cache._base
    if (base is not None and base.dim() == 3 and cache.stride() == base.stride() and base.shape[0] == B
            and base.shape[2] == H and base.dtype == new.dtype and base.device == new.device):
        end = _BUFFER_END.get(base)
        if end is not None and end < base.shape[1]:
            offset = cast(int, cache.storage_offset() - base.storage_offset())  # an int outside tracing
            start, rem = divmod(offset, base.stride(1))
            if rem == 0 and start + W == end:
                base.select(1, end).copy_(new)
                _BUFFER_END[base] = end + 1
                return base[:, start:end + 1]
    base = cache.new_empty((B, 2 * W + 32, H))
    base[:, :W].copy_(cache)
    base.select(1, W).copy_(new)
    _BUFFER_END[base] = W + 1
    return base[:, :W + 1]


def sinusoidal_encoding(pos: Tensor, dim: int) -> Tensor:
    """pos (...) float -> (..., dim) with [sin(pos w_j), cos(pos w_j)], w_j = 10000^(-2j/dim)."""
    half = dim // 2
    ang = pos.unsqueeze(-1) * _frequencies(half, pos.dtype, pos.device)
    enc = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        enc = F.pad(enc, (0, 1))
    return enc


def episode_positions(dones: Tensor, count0: Tensor) -> Tensor:
    """Step-within-episode index: dones (B, T), count0 (B,) float -> pos (B, T) float.

    Before the first done of a row, positions continue from ``count0``; from a done at step s on,
    the position is t - s.
    """
    B, T = dones.shape
    t = torch.arange(T, device=dones.device).expand(B, T)
    last = torch.where(dones > 0.5, t, torch.full_like(t, -1)).cummax(dim=1).values
    pos = torch.where(last >= 0, t - last, t + count0.round().long().unsqueeze(1))
    return pos.to(count0.dtype)


class TransformerBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: int = 2):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.H, self.nh, self.dh = hidden_size, num_heads, hidden_size // num_heads
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_ratio * hidden_size), nn.GELU(),
                                 nn.Linear(mlp_ratio * hidden_size, hidden_size))

    def _heads(self, x: Tensor) -> Tensor:
        """(..., L, H) -> (..., nh, L, dh)."""
        return x.unflatten(-1, (self.nh, self.dh)).transpose(-3, -2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """q (..., Lq, H), k/v (..., Lk, H), mask (..., Lq, Lk) bool -> (..., Lq, H)."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.dh))  # (..., nh, Lq, Lk)
        scores = scores.masked_fill(~mask.unsqueeze(-3), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # (..., nh, Lq, dh)
        return out.transpose(-3, -2).flatten(-2)

    def step(self, x: Tensor, k_c: Tensor, v_c: Tensor, invalid: Tensor, fast: bool = False):
        """x (B, H); caches (B, W, H); invalid (B, 1, W+1) bool, keys (cache, then the current step) the
        query must not see -> (x, k_all (B, W+1, H), v_all (B, W+1, H)). See the module docstring.
        ``fast``: no autograd (in-place appends to the cache buffer, in-place masking)."""
        H, nh = self.H, self.nh
        # parameters are read from the ``_parameters`` dicts (``functional_call`` too); their values are set
        m: dict[str, Any] = self._modules
        n1, qkv, pr, n2 = (m[k]._parameters for k in ("norm1", "qkv", "proj", "norm2"))
        l1, l2 = m["mlp"][0]._parameters, m["mlp"][2]._parameters
        eps1, eps2 = m["norm1"].eps, m["norm2"].eps
        u = torch.layer_norm(x, (H,), n1["weight"], n1["bias"], eps1)
        q, k, v = F.linear(u, qkv["weight"], qkv["bias"]).chunk(3, -1)
        if fast:
            k_all, v_all = _append_kv(k_c, k), _append_kv(v_c, v)  # (B, W+1, H)
        else:
            k_all, v_all = torch.cat([k_c, k.unsqueeze(1)], dim=1), torch.cat([v_c, v.unsqueeze(1)], dim=1)
        hmask, index = _head_constants(nh, self.dh, x.dtype, x.device)
        scores = torch.bmm(q.unsqueeze(1) * hmask, k_all.transpose(1, 2))  # (B, nh, W+1)
        scores = scores.masked_fill_(invalid, -math.inf) if fast else scores.masked_fill(invalid, -math.inf)
        out = torch.bmm(torch.softmax(scores, dim=-1), v_all)  # (B, nh, H); head n's output in block (n, n)
        a = out.view(out.shape[0], nh * H).index_select(1, index)  # (B, H), heads concatenated
        x = x + F.linear(a, pr["weight"], pr["bias"])
        u = torch.layer_norm(x, (H,), n2["weight"], n2["bias"], eps2)
        return x + F.linear(F.gelu(F.linear(u, l1["weight"], l1["bias"])), l2["weight"], l2["bias"]), k_all, v_all

    def forward_sequence(self, x: Tensor, k_c: Tensor, v_c: Tensor, mask: Tensor, Q: int):
        """x (B, T, H); caches (B, W, H); mask (B, nb, Q, Q+W) bool; Q the query block length.

        Returns (x', k_all (B, W+T, H), v_all (B, W+T, H)).
        """
        B, T, H = x.shape
        W = k_c.shape[1]
        nb = mask.shape[1]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        k_all = torch.cat([k_c, k], dim=1)
        v_all = torch.cat([v_c, v], dim=1)
        pad = nb * Q - T
        if pad:
            q = F.pad(q, (0, 0, 0, pad))
            k_p, v_p = F.pad(k_all, (0, 0, 0, pad)), F.pad(v_all, (0, 0, 0, pad))
        else:
            k_p, v_p = k_all, v_all
        qb = q.unflatten(1, (nb, Q))  # (B, nb, Q, H)
        kb = k_p.unfold(1, Q + W, Q).transpose(-1, -2)  # (B, nb, Q+W, H)
        vb = v_p.unfold(1, Q + W, Q).transpose(-1, -2)
        a = self._attend(qb, kb, vb, mask).flatten(1, 2)[:, :T]  # (B, T, H)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x)), k_all, v_all


class TransformerCore(nn.Module):
    """Input projection + sinusoidal episode positions -> ``num_layers`` blocks -> LayerNorm."""

    def __init__(self, input_dim: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                 context_len: int = 64):
        super().__init__()
        if context_len < 1:
            raise ValueError(f"context_len must be >= 1, got {context_len}")
        self.input_dim, self.hidden_size, self.num_layers = input_dim, hidden_size, num_layers
        self.num_heads, self.context_len = num_heads, context_len
        self.output_dim = hidden_size
        self.encoder = nn.Linear(input_dim, hidden_size)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, num_heads) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def initial_state(self, batch_size: int) -> State:
        p = self.encoder.weight
        W, H = self.context_len - 1, self.hidden_size
        z: dict[str, Any] = dict(dtype=p.dtype, device=p.device)
        kv = tuple((torch.zeros(batch_size, W, H, **z), torch.zeros(batch_size, W, H, **z))
                   for _ in self.blocks)
        return torch.zeros(batch_size, **z), torch.zeros(batch_size, W, **z), kv

    def _embed(self, x: Tensor, pos: Tensor) -> Tensor:
        e = self.encoder
        return F.linear(x, e.weight, e.bias) + sinusoidal_encoding(pos, self.hidden_size)

    def step(self, x_t: Tensor, state: State, done_t: Tensor | None) -> tuple[Tensor, State]:
        fast = no_autograd(x_t)
        if done_t is not None and (not fast or bool(done_t.any())):
            state = reset_state(state, done_t)
        count, valid, kv = cast("tuple[Tensor, Tensor, _KV]", state)
        m: dict[str, Any] = self._modules  # raw dicts: their values are set (not None) here
        enc, norm = m["encoder"]._parameters, m["out_norm"]
        x = F.linear(x_t, enc["weight"], enc["bias"]) + sinusoidal_encoding(count, self.hidden_size)
        ok = F.pad(valid, (0, 1), value=1.0)  # (B, W+1): cache slots of this episode, then the current step
        invalid = (ok < 0.5).unsqueeze(1)  # (B, 1, W+1)
        new_kv = []
        for block, (k_c, v_c) in zip(m["blocks"]._modules.values(), kv):
            x, k_all, v_all = block.step(x, k_c, v_c, invalid, fast)
            new_kv.append((k_all[:, 1:], v_all[:, 1:]))
        npar = norm._parameters
        y = torch.layer_norm(x, (self.hidden_size,), npar["weight"], npar["bias"], norm.eps)
        return y, (count + 1.0, ok[:, 1:], tuple(new_kv))

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        count, valid, kv = cast("tuple[Tensor, Tensor, _KV]", state)
        B, T = x.shape[:2]
        L, W = self.context_len, self.context_len - 1
        d = dones.to(count.dtype)
        pos = episode_positions(d, count)  # (B, T)
        z = self._embed(x, pos)

        # Key metadata over the concatenated [cache (W), new steps (T)] axis: validity and episode id.
        # Cached valid slots belong to the episode in progress (id 0); new steps get cumsum(dones).
        ep_new = torch.cumsum(d, dim=1)  # (B, T)
        ep_k = torch.cat([torch.zeros_like(valid), ep_new], dim=1)  # (B, W+T)
        ok_k = torch.cat([valid > 0.5, torch.ones_like(d, dtype=torch.bool)], dim=1)
        Q = L  # query block length
        nb = -(-T // Q)
        pad = nb * Q - T
        if pad:  # padded keys sit after every real query, so causality hides them from real queries
            ep_k = torch.cat([ep_k, ep_k[:, -1:].expand(B, pad)], dim=1)
            ok_k = torch.cat([ok_k, torch.ones_like(ok_k[:, :1]).expand(B, pad)], dim=1)
            ep_q = torch.cat([ep_new, ep_new[:, -1:].expand(B, pad)], dim=1)
        else:
            ep_q = ep_new
        ep_kb = ep_k.unfold(1, Q + W, Q)  # (B, nb, Q+W)
        ok_kb = ok_k.unfold(1, Q + W, Q)
        ep_qb = ep_q.unflatten(1, (nb, Q))  # (B, nb, Q)
        # Query i of a block sits at key index i + W; it may see keys j with i <= j <= i + W.
        i = torch.arange(Q, device=x.device).unsqueeze(1)
        j = torch.arange(Q + W, device=x.device).unsqueeze(0)
        band = (j >= i) & (j <= i + W)  # (Q, Q+W)
        mask = band & ok_kb.unsqueeze(2) & (ep_kb.unsqueeze(2) == ep_qb.unsqueeze(3))  # (B, nb, Q, Q+W)

        # Final cache: last W slots, valid where they belong to the last step's episode; other slots are
        # zeroed so the state equals the one a loop of ``step`` (which resets the cache) would build.
        ok_last = ok_k[:, T:W + T]
        new_valid = (ok_last & (ep_k[:, T:W + T] == ep_new[:, -1:])).to(valid.dtype)
        keep = new_valid.unsqueeze(-1)
        new_kv = []
        for block, (k_c, v_c) in zip(cast("Iterable[TransformerBlock]", self.blocks), kv):
            z, k_all, v_all = block.forward_sequence(z, k_c, v_c, mask, Q)
            new_kv.append((k_all[:, T:] * keep, v_all[:, T:] * keep))
        return self.out_norm(z), (pos[:, -1] + 1.0, new_valid, tuple(new_kv))

    def forward(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.forward_sequence(x, state, dones)
