"""Ray Tune sweeps: ``ssm-metarl tune --config tune_configs/<name>.yaml``.

==============  ==========================================================================  ============
module          what                                                                        imports Ray
==============  ==========================================================================  ============
``spec``        YAML schema, validation (one-line :class:`SweepConfigError`), trial configs  no
``runner``      ``run_sweep``: storage checks, ``runtime.tune.fit_sweep``, result rows       no
``report``      results table, CSV, JSON summary, heatmap PNG                               no
``cli``         the ``tune`` subcommand (parser flags and dispatch)                          no
==============  ==========================================================================  ============

The Tune side (Tuner, scheduler, the trial function, placement groups) is ``runtime.tune``: Ray is
imported only under ``ssm_metarl_ray.runtime``.
"""

from ssm_metarl_ray.sweeps.spec import SweepConfigError, SweepSpec, load_sweep, parse_sweep

__all__ = ["SweepConfigError", "SweepSpec", "load_sweep", "parse_sweep"]
