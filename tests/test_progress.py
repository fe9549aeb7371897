"""Progress reporting: plain ETA lines when stderr is not a terminal (CI logs, ray job logs)."""

import io

from ssm_metarl_ray.utils.progress import Progress, eta_line


def test_eta_line():
    assert eta_line("eval", 0, 4, 0.0) == "eval: 0/4 (0%), 0 s elapsed"
    assert eta_line("eval", 1, 4, 10.0) == "eval: 1/4 (25%), 10 s elapsed, ETA 30 s"
    assert eta_line("eval", 4, 4, 40.0) == "eval: 4/4 (100%), 40 s elapsed"


def test_plain_lines_when_not_a_tty():
    out = io.StringIO()
    with Progress(3, "eval", stream=out, every_s=3600) as p:
        for _ in range(3):
            p.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("eval: 1/3") and lines[-1].startswith("eval: 3/3 (100%)") and len(lines) == 2


def test_disabled_is_silent():
    out = io.StringIO()
    with Progress(2, "eval", stream=out, enabled=False) as p:
        p.update(2)
    assert out.getvalue() == "" and p.done == 2
