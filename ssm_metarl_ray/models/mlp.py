"""Stateless MLP core (memoryless baseline): ``num_layers`` x (Linear -> tanh|relu), state ``()``.

It still follows the recurrent contract so every model plugs into the same policy and trainers:
``step`` and ``forward_sequence`` ignore ``state`` and ``dones`` and return the empty tuple. Both run
the layers with ``F.linear`` and ``torch.tanh`` directly (no ``nn.Sequential`` call overhead); the
parameters stay in ``net`` (``net.0.weight``, ...) so checkpoints and ``functional_call`` are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm_metarl_ray.config import MLP_INITS
from ssm_metarl_ray.models.base import State

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class MLPCore(nn.Module):
    def __init__(self, input_dim: int, hidden_size: int = 64, num_layers: int = 2, activation: str = "tanh",
                 init: str = "torch"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if init not in MLP_INITS:
            raise ValueError(f"unknown MLP init {init!r}; allowed: {', '.join(MLP_INITS)}")
        self._act = ACTIVATIONS[activation]
        self.input_dim, self.hidden_size = input_dim, hidden_size
        self.output_dim = hidden_size
        layers: list[nn.Module] = []
        d = input_dim
        for _ in range(max(1, num_layers)):
            layers += [nn.Linear(d, hidden_size), nn.Tanh() if activation == "tanh" else nn.ReLU()]
            d = hidden_size
        self.net = nn.Sequential(*layers)
        self._linears = [m for m in layers if isinstance(m, nn.Linear)]  # the same modules as in ``net``
        if init == "xavier":  # rllab's layers (MAML 2017's policy): Xavier-uniform weights, zero biases
            for lin in self._linears:
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)

    def _mlp(self, x: Tensor) -> Tensor:
        for lin in self._linears:
            # where ``functional_call`` puts substitutes too; skips Module.__getattr__
            p: dict[str, Any] = lin._parameters
            x = self._act(F.linear(x, p["weight"], p["bias"]))
        return x

    def initial_state(self, batch_size: int) -> State:
        return ()

    def step(self, x_t: Tensor, state: State, done_t: Tensor | None) -> tuple[Tensor, State]:
        return self._mlp(x_t), ()

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self._mlp(x), ()

    def forward(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.forward_sequence(x, state, dones)
