"""Ray Tune sweeps: ``ssm-metarl tune --config tune_configs/<name>.yaml``.

==============  ==========================================================================  ============
module          what                                                                        imports Ray
==============  ==========================================================================  ============
``spec``        YAML schema, validation (one-line :class:`SweepConfigError`), trial configs  no
``trainable``   the Tune function trainable (meta-train + held-out evaluation per trial)     yes
``runner``      ``run_sweep``: Tuner / Tuner.restore, resources, result collection          yes
``report``      results table, CSV, JSON summary, heatmap PNG                               no
``cli``         the ``tune`` subcommand (parser flags and dispatch)                          lazily
==============  ==========================================================================  ============
"""

from ssm_metarl_ray.sweeps.spec import SweepConfigError, SweepSpec, load_sweep, parse_sweep

__all__ = ["SweepConfigError", "SweepSpec", "load_sweep", "parse_sweep"]
