"""``make_core(cfg, input_dim)``: build the sequence core named by ``cfg.kind``."""

from __future__ import annotations

from torch import nn

from ssm_metarl_ray.config import MODELS, SSM_R_MAX, ModelConfig


def make_core(cfg: ModelConfig, input_dim: int) -> nn.Module:
    """Return a core following :class:`ssm_metarl_ray.models.base.SequenceCore` with
    ``output_dim == cfg.hidden_size``. Unknown kinds raise ``ValueError`` listing the allowed ones."""
    kind = cfg.kind
    if kind == "ssm":
        from ssm_metarl_ray.models.ssm import SSMCore

        return SSMCore(input_dim, cfg.hidden_size, cfg.num_layers, cfg.state_size, r_min=cfg.ssm_r_min, r_max=SSM_R_MAX,
                       input_hidden=cfg.ssm_input_hidden)
    if kind in ("lstm", "gru"):
        from ssm_metarl_ray.models.rnn import GRUCore, LSTMCore

        cls = LSTMCore if kind == "lstm" else GRUCore
        return cls(input_dim, cfg.hidden_size, cfg.num_layers)
    if kind == "transformer":
        from ssm_metarl_ray.models.transformer import TransformerCore

        return TransformerCore(input_dim, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.context_len)
    if kind == "mlp":
        from ssm_metarl_ray.models.mlp import MLPCore

        return MLPCore(input_dim, cfg.hidden_size, cfg.num_layers, cfg.activation, cfg.mlp_init)
    raise ValueError(f"unknown model kind {kind!r}; allowed: {', '.join(MODELS)}")
