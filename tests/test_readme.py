"""The README's test command is what CI runs: `.ci/run` ends with the same line, character for character."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme_blocks = (ROOT / "README.md").read_text().split("```bash\n")
    commands = [block.split("```")[0].strip() for block in readme_blocks[1:]]
    assert ci_command in commands, ci_command
    assert "pytest" in ci_command and "chromium" in ci_command
