"""The README's quick-start commands stay in sync with .ci/run and the CLI."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_has_exactly_two_quick_start_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("ssm-metarl train") and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    install_and_test = _readme_commands()[1].split("&& ", 2)[2]  # after venv creation and activation
    assert install_and_test in (ROOT / ".ci" / "run").read_text()
