"""Stateless MLP core (memoryless baseline): ``num_layers`` x (Linear -> tanh), state ``()``.

It still follows the recurrent contract so every model plugs into the same policy and trainers:
``step`` and ``forward_sequence`` ignore ``state`` and ``dones`` and return the empty tuple.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssm_metarl_ray.models.base import State


class MLPCore(nn.Module):
    def __init__(self, input_dim: int, hidden_size: int = 64, num_layers: int = 2):
        super().__init__()
        self.input_dim, self.hidden_size = input_dim, hidden_size
        self.output_dim = hidden_size
        layers: list[nn.Module] = []
        d = input_dim
        for _ in range(max(1, num_layers)):
            layers += [nn.Linear(d, hidden_size), nn.Tanh()]
            d = hidden_size
        self.net = nn.Sequential(*layers)

    def initial_state(self, batch_size: int) -> State:
        return ()

    def step(self, x_t: Tensor, state: State, done_t: Tensor) -> tuple[Tensor, State]:
        return self.net(x_t), ()

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.net(x), ()

    def forward(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.forward_sequence(x, state, dones)
