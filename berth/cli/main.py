"""The `berth` console script: Invoke's Program over the tasks of berth/cli/tasks.py, plus ``--project DIR``."""

from __future__ import annotations

import os
import sys

from invoke import Argument, Config, Program
from invoke.exceptions import Exit, ParseError

from berth import __version__
from berth.cli.app import console, safe
from berth.cli.tasks import collection
from berth.errors import BerthError, ExitCode
from berth.settings import PROJECT_ENV, find_project


class BerthConfig(Config):
    """Invoke's configuration under berth's name: berth.yaml files, BERTH_INVOKE_* variables, not invoke's."""

    prefix = "berth"
    env_prefix = "BERTH_INVOKE"     # type: ignore[assignment]  # Invoke declares it None, and reads a str


class BerthProgram(Program):
    def core_args(self) -> list[Argument]:
        return [*super().core_args(),
                Argument(names=("project",), help="the project directory (default: $BERTH_PROJECT, else the nearest "
                                                  "directory with a berth.yml upward from here)")]

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(str(exc), code=int(ExitCode.BAD_OPTIONS)) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(str(exc), code=int(ExitCode.BAD_OPTIONS)) from None

    def execute(self) -> None:
        given = self.args.project.value
        if given:
            try:
                folder = find_project(given)
            except BerthError as exc:
                console.print(f"[bold red]error:[/] {safe(str(exc))}", soft_wrap=True)
                raise Exit(code=int(exc.exit_code)) from None
            os.environ[PROJECT_ENV] = str(folder)     # the tasks, and verify's pytest processes, find it there
        super().execute()


program = BerthProgram(name="berth", binary="berth", version=__version__, namespace=collection(),
                       config_class=BerthConfig)


def main() -> None:
    try:
        program.run(sys.argv)
    except BrokenPipeError:
        # `berth --list | head`: the reader left early. Python's advice: point stdout at devnull so that the
        # flush at exit does not fail again, and exit without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(int(ExitCode.ERROR))
