"""The sweep YAML schema and its validation (no Ray import: the CLI validates before anything starts).

Schema (every key but ``name`` is optional; anything else is an error)::

    name: hybrid_sweep               # experiment name: folder under --storage-path, [A-Za-z0-9_.-]
    description: free text
    metric: post_adapt_return        # what Tune optimises / ranks by (see allowed_metrics)
    mode: max                        # max | min
    base:                            # ExperimentConfig overrides, nested or dotted
      env: navigation-2d
      model: {kind: ssm, hidden_size: 32}
      adapt.adaptation_mode: hybrid  # the mode whose returns are `post_adapt_return` etc.
    search:                          # param -> exactly one of grid | choice | uniform | loguniform
      buffer_size: {grid: [2000, 20000]}        # short names when unique, else dotted (adapt.clip_eps)
      meta.inner_lr: {loguniform: [0.005, 0.2]} # [low, high], float fields only
    num_samples: 1                   # repeats of the grid / samples of the random parameters
    scheduler: none                  # none | asha | {type: asha, grace_period, reduction_factor, max_t}
    max_concurrent_trials: 2         # null: as many as the cluster's CPUs allow
    max_failures: 1                  # retries of a failed trial, each from its latest checkpoint
    report_every: 10                 # meta-iterations between evaluation + tune.report + checkpoint
    eval_modes: [standard, hybrid]   # held-out evaluation modes at every report
    resources:                       # one placement-group bundle per process of a trial
      learner_cpus: 1.0              #   the trial itself (meta-learner; in-process sampling if num_workers 0)
      num_workers: 1                 #   rollout-worker actors (0: sample and evaluate inside the trial)
      cpus_per_worker: 0.5
      num_evaluators: 1              #   evaluator actors (num_workers > 0 only; 0: evaluate in the trial)
      cpus_per_evaluator: 0.5
    heatmap: [buffer_size, experience_weight]   # two grid/choice params (default: those two if swept)
    inject_failure_at: null          # testing: raise once at this iteration (attempts not restored
                                     # from a checkpoint), so FailureConfig retries from the checkpoint
    time_budget_s: null              # stop the whole sweep after this many seconds

Derived values: unless set, ``adapt.adapt_lr`` follows ``meta.inner_lr`` and ``adapt.episodes_per_step``
follows ``meta.episodes_per_task`` (as in ``ssm-metarl train``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssm_metarl_ray.config import (
    ADAPTATION_MODES,
    SUBCONFIGS,
    AdaptConfig,
    ConfigError,
    ExperimentConfig,
    build_experiment_config,
    check_field,
    field_types,
)
from ssm_metarl_ray.runtime.config import trial_bundles

TOP_KEYS = ("name", "description", "metric", "mode", "base", "search", "num_samples", "scheduler",
            "max_concurrent_trials", "max_failures", "report_every", "eval_modes", "resources", "heatmap",
            "inject_failure_at", "time_budget_s")
SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform")
RESOURCE_DEFAULTS = {"learner_cpus": 1.0, "num_workers": 1, "cpus_per_worker": 0.5, "num_evaluators": 1,
                     "cpus_per_evaluator": 0.5}
ASHA_DEFAULTS = {"grace_period": 1, "reduction_factor": 2}
FORBIDDEN = {"output_dir": "each trial writes to its own Tune trial directory"}


class SweepConfigError(ValueError):
    """A bad sweep YAML: reported as one line, exit code 2, before any trial starts."""


def config_fields() -> dict[str, str]:
    """Dotted ExperimentConfig field -> its type name (the config's own table)."""
    return field_types()


def resolve_name(name: Any, where: str) -> str:
    """``buffer_size`` -> ``adapt.buffer_size`` when unique; dotted names are checked as they are."""
    known = config_fields()
    if not isinstance(name, str):
        raise SweepConfigError(f"{where}: parameter names must be strings, got {name!r}")
    if name in known:
        return name
    matches = [k for k in known if k.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise SweepConfigError(f"{where}: {name!r} is ambiguous; write one of {', '.join(matches)}")
    raise SweepConfigError(f"{where}: unknown parameter {name!r}; allowed: {', '.join(sorted(known))} "
                           "(or their last part when unique)")


def check_value(name: str, v: Any, where: str) -> Any:
    """Type and range check of one value of field ``name`` (the config's rules, :func:`check_field`);
    returns it (ints accepted for floats)."""
    if name in FORBIDDEN:
        raise SweepConfigError(f"{where}: {name} cannot be set in a sweep ({FORBIDDEN[name]})")
    try:
        return check_field(name, v)
    except ConfigError as e:
        raise SweepConfigError(f"{where}: {e}") from None


def _flatten(d: Any, where: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        raise SweepConfigError(f"{where}: must be a mapping, got {type(d).__name__}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix and k in SUBCONFIGS:
            out.update(_flatten(v, where, f"{k}."))
        else:
            out[key] = v
    return out


@dataclass(frozen=True)
class SearchParam:
    name: str  # dotted
    kind: str  # grid | choice | uniform | loguniform
    values: tuple  # grid/choice values, or (low, high)

    @property
    def discrete(self) -> bool:
        return self.kind in ("grid", "choice")


def _parse_search(raw: Any, base: dict[str, Any]) -> dict[str, SearchParam]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepConfigError(f"search: must be a mapping param -> {{{' | '.join(SEARCH_KINDS)}: ...}}")
    out: dict[str, SearchParam] = {}
    for key, spec in raw.items():
        name = resolve_name(key, "search")
        where = f"search.{key}"
        if name in out:
            raise SweepConfigError(f"{where}: {name} is listed twice")
        if name in base:
            raise SweepConfigError(f"{where}: {name} is set in both base and search")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
            raise SweepConfigError(f"{where}: must be exactly one of {{grid: [...]}}, {{choice: [...]}}, "
                                   f"{{uniform: [low, high]}}, {{loguniform: [low, high]}}; got {spec!r}")
        kind, vals = next(iter(spec.items()))
        if not isinstance(vals, list) or not vals:
            raise SweepConfigError(f"{where}.{kind}: must be a non-empty list, got {vals!r}")
        if kind in ("grid", "choice"):
            vals = [check_value(name, v, f"{where}.{kind}") for v in vals]
            if len(set(map(repr, vals))) != len(vals):
                raise SweepConfigError(f"{where}.{kind}: duplicate values in {vals!r}")
        else:
            if config_fields()[name] != "float":
                raise SweepConfigError(f"{where}: {kind} needs a float parameter; {name} is "
                                       f"{config_fields()[name]}: use grid or choice")
            if len(vals) != 2:
                raise SweepConfigError(f"{where}.{kind}: must be [low, high], got {vals!r}")
            lo, hi = (check_value(name, v, f"{where}.{kind}") for v in vals)
            if not lo < hi:
                raise SweepConfigError(f"{where}.{kind}: low must be < high, got [{lo!r}, {hi!r}]")
            if kind == "loguniform" and not lo > 0:
                raise SweepConfigError(f"{where}.loguniform: low must be > 0, got {lo!r}")
            vals = [lo, hi]
        out[name] = SearchParam(name, kind, tuple(vals))
    return out


def _int(raw: dict, key: str, default: Any, lo: int, allow_none: bool = False) -> Any:
    v = raw.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        alt = " or null" if allow_none else ""
        raise SweepConfigError(f"{key}: must be an integer >= {lo}{alt}, got {v!r}")
    return v


def _num(v: Any, where: str, lo: float, strict: bool = True) -> float:
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
            (v <= lo if strict else v < lo):
        raise SweepConfigError(f"{where}: must be a number {'>' if strict else '>='} {lo:g}, got {v!r}")
    return float(v)


def allowed_metrics(eval_modes: tuple[str, ...]) -> list[str]:
    out = ["post_adapt_return", "pre_adapt_return", "adapt_gain", "meta/pre_return", "meta/post_return"]
    for m in eval_modes:
        out += [f"{m}/post_adapt_return", f"{m}/pre_adapt_return", f"{m}/adapt_gain"]
    if set(ADAPTATION_MODES) <= set(eval_modes):
        out.append("hybrid_minus_standard")
    return out


def num_reports(iterations: int, report_every: int | None) -> int:
    return 1 if not report_every else -(-iterations // report_every)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    metric: str = "post_adapt_return"
    mode: str = "max"
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)  # dotted name -> value
    search: dict[str, SearchParam] = field(default_factory=dict)
    num_samples: int = 1
    scheduler: dict | None = None  # {"type": "asha", grace_period, reduction_factor, max_t}
    max_concurrent_trials: int | None = None
    max_failures: int = 1
    report_every: int | None = None  # None: only at the end
    eval_modes: tuple[str, ...] = ADAPTATION_MODES
    resources: dict[str, Any] = field(default_factory=lambda: dict(RESOURCE_DEFAULTS))
    heatmap: tuple[str, str] | None = None
    inject_failure_at: int | None = None
    time_budget_s: float | None = None
    source: str = ""

    # ---- derived ----------------------------------------------------------------------------------
    def values_of(self, name: str) -> list:
        """Every value ``name`` can take (grid/choice values, the two bounds, or the base/default value)."""
        if name in self.search:
            return list(self.search[name].values)
        return [self.base.get(name, default_value(name))]

    @property
    def max_iterations(self) -> int:
        return max(self.values_of("iterations"))

    @property
    def max_reports(self) -> int:
        return max(num_reports(i, self.report_every) for i in self.values_of("iterations"))

    def bundles(self) -> list[dict[str, float]]:
        return trial_bundles(self.resources)

    @property
    def cpus_per_trial(self) -> float:
        return sum(b["CPU"] for b in self.bundles())

    @property
    def num_grid_trials(self) -> int:
        n = 1
        for p in self.search.values():
            if p.kind == "grid":
                n *= len(p.values)
        return n * self.num_samples

    def trial_settings(self) -> dict[str, Any]:
        """What every trial needs besides its sampled params (stored in Tune's param_space, so
        ``Tuner.restore`` does not need the YAML)."""
        return {"name": self.name, "base": dict(self.base), "report_every": self.report_every,
                "eval_modes": list(self.eval_modes), "resources": dict(self.resources),
                "inject_failure_at": self.inject_failure_at}


def default_value(name: str) -> Any:
    top, _, sub = name.partition(".")
    if sub:
        return getattr(getattr(ExperimentConfig(), top), sub)
    return getattr(ExperimentConfig(), top)


def parse_sweep(raw: Any, source: str = "<config>") -> SweepSpec:
    """Validate a loaded YAML document; raises :class:`SweepConfigError` with a one-line message."""
    try:
        return _parse(raw, source)
    except SweepConfigError as e:
        raise SweepConfigError(f"{source}: {e}") from None


def _parse_header(raw: Any) -> tuple[str, str]:
    if not isinstance(raw, dict):
        raise SweepConfigError(f"the document must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SweepConfigError(f"unknown key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepConfigError(f"name: required, letters/digits/._- only, got {name!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise SweepConfigError(f"description: must be a string, got {description!r}")
    return name, description


def _parse_base(raw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for k, v in _flatten(raw or {}, "base").items():
        n = resolve_name(k, "base")
        if n in base:
            raise SweepConfigError(f"base: {n} is set twice")
        base[n] = check_value(n, v, "base")
    return base


def _parse_objective(raw: dict, base: dict, search: dict) -> tuple[str, str, tuple[str, ...]]:
    """(metric, mode, eval_modes); the mode of ``post_adapt_return`` must be one of the eval modes."""
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise SweepConfigError(f"mode: must be max or min, got {mode!r}")
    eval_modes = raw.get("eval_modes", list(ADAPTATION_MODES))
    if (not isinstance(eval_modes, list) or not eval_modes or len(set(eval_modes)) != len(eval_modes)
            or any(m not in ADAPTATION_MODES for m in eval_modes)):
        raise SweepConfigError(f"eval_modes: must be a non-empty list of {', '.join(ADAPTATION_MODES)}, "
                               f"got {eval_modes!r}")
    eval_modes = tuple(eval_modes)
    primary = search["adapt.adaptation_mode"].values if "adapt.adaptation_mode" in search else \
        [base.get("adapt.adaptation_mode", AdaptConfig().adaptation_mode)]
    for m in primary:
        if m not in eval_modes:
            raise SweepConfigError(f"adapt.adaptation_mode {m!r} (the mode of post_adapt_return) is not in "
                                   f"eval_modes {list(eval_modes)}")
    metric = raw.get("metric", "post_adapt_return")
    allowed = allowed_metrics(eval_modes)
    if metric not in allowed:
        raise SweepConfigError(f"metric: unknown metric {metric!r}; allowed: {', '.join(allowed)}")
    return metric, mode, eval_modes


def _parse_resources(res: Any) -> dict[str, Any]:
    res = res or {}
    if not isinstance(res, dict):
        raise SweepConfigError(f"resources: must be a mapping, got {res!r}")
    bad = [k for k in res if k not in RESOURCE_DEFAULTS]
    if bad:
        raise SweepConfigError(f"resources: unknown key {bad[0]!r}; allowed: {', '.join(RESOURCE_DEFAULTS)}")
    resources = {**RESOURCE_DEFAULTS, **res}
    for k, lo in (("num_workers", 0), ("num_evaluators", 0)):
        v = resources[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise SweepConfigError(f"resources.{k}: must be an integer >= {lo}, got {v!r}")
    for k in ("learner_cpus", "cpus_per_worker", "cpus_per_evaluator"):
        resources[k] = _num(resources[k], f"resources.{k}", 0.0)
    return resources


def _parse_scheduler(sched: Any) -> dict | None:
    """None, or ASHA settings with defaults filled in (``max_t`` is checked once the spec exists)."""
    if sched in (None, "none", False):
        return None
    if sched == "asha":
        sched = {"type": "asha"}
    if not isinstance(sched, dict) or sched.get("type") != "asha":
        raise SweepConfigError(f"scheduler: must be none, asha or {{type: asha, grace_period, "
                               f"reduction_factor, max_t}}, got {sched!r}")
    extra = [k for k in sched if k not in ("type", "grace_period", "reduction_factor", "max_t")]
    if extra:
        raise SweepConfigError(f"scheduler: unknown key {extra[0]!r}; allowed: type, grace_period, "
                               "reduction_factor, max_t")
    scheduler = {"type": "asha", **ASHA_DEFAULTS, **{k: v for k, v in sched.items() if k != "type"}}
    scheduler["grace_period"] = _int(scheduler, "grace_period", 1, 1)
    scheduler["reduction_factor"] = _num(scheduler["reduction_factor"], "scheduler.reduction_factor", 1.0)
    return scheduler


def _parse_heatmap(heat: Any, search: dict[str, SearchParam]) -> tuple[str, str] | None:
    discrete = [n for n, p in search.items() if p.discrete]
    if heat is None:
        pair = ("adapt.buffer_size", "adapt.experience_weight")
        if all(n in discrete for n in pair):
            return pair
        return (discrete[0], discrete[1]) if len(discrete) >= 2 else None
    if not isinstance(heat, list) or len(heat) != 2:
        raise SweepConfigError(f"heatmap: must be a list of two searched parameters, got {heat!r}")
    heatmap = (resolve_name(heat[0], "heatmap"), resolve_name(heat[1], "heatmap"))
    for h in heatmap:
        if h not in discrete:
            raise SweepConfigError(f"heatmap: {h} must be searched with grid or choice")
    if heatmap[0] == heatmap[1]:
        raise SweepConfigError("heatmap: the two parameters must differ")
    return heatmap


def _check_spec(spec: SweepSpec) -> None:
    """Checks that need the whole spec: ASHA's max_t, the injected failure, a buildable config."""
    scheduler, inject, report_every = spec.scheduler, spec.inject_failure_at, spec.report_every
    if scheduler is not None:
        max_t = scheduler.get("max_t", spec.max_reports)
        if isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < scheduler["grace_period"]:
            raise SweepConfigError(f"scheduler.max_t: must be an integer >= grace_period "
                                   f"({scheduler['grace_period']}), got {max_t!r}")
        scheduler["max_t"] = max_t
    if inject is not None:
        if not report_every or inject <= report_every:
            raise SweepConfigError(f"inject_failure_at: must be > report_every (a checkpoint must exist to "
                                   f"retry from), got {inject} with report_every {report_every}")
        if inject > min(spec.values_of("iterations")):
            raise SweepConfigError(f"inject_failure_at: {inject} is beyond the run's iterations")
    # every combination of base + one value per discrete param must make a valid ExperimentConfig
    try:
        build_experiment_config(spec.base, {n: p.values[0] for n, p in spec.search.items()})
    except (TypeError, ValueError) as e:
        raise SweepConfigError(f"base/search do not make a valid experiment config: {e}") from None


def _parse(raw: Any, source: str) -> SweepSpec:
    name, description = _parse_header(raw)
    base = _parse_base(raw.get("base"))
    search = _parse_search(raw.get("search"), base)
    metric, mode, eval_modes = _parse_objective(raw, base, search)
    time_budget = raw.get("time_budget_s")
    spec = SweepSpec(
        name=name, metric=metric, mode=mode, description=description, base=base, search=search,
        num_samples=_int(raw, "num_samples", 1, 1),
        scheduler=_parse_scheduler(raw.get("scheduler")),
        max_concurrent_trials=_int(raw, "max_concurrent_trials", None, 1, allow_none=True),
        max_failures=_int(raw, "max_failures", 1, 0),
        report_every=_int(raw, "report_every", None, 1, allow_none=True), eval_modes=eval_modes,
        resources=_parse_resources(raw.get("resources")), heatmap=_parse_heatmap(raw.get("heatmap"), search),
        inject_failure_at=_int(raw, "inject_failure_at", None, 1, allow_none=True),
        time_budget_s=None if time_budget is None else _num(time_budget, "time_budget_s", 0.0), source=source)
    _check_spec(spec)
    return spec


def load_sweep(path: str | Path) -> SweepSpec:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SweepConfigError(f"--config {str(path)!r} is not a file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())
        raise SweepConfigError(f"{path}: not valid YAML ({first})") from None
    return parse_sweep(raw, str(path))
