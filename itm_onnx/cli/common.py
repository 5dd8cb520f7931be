"""What every command shares: error handling, --json output, common options."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import ItmOnnxError, UsageError
from ..utils.progress import say, set_quiet


def _quiet_under_json(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """--json output is for machines: no progress bars beside it."""
    if value:
        set_quiet(True)
    return value


json_option = click.option(
    "--json", "as_json", is_flag=True, callback=_quiet_under_json,
    help="Print the result as JSON on stdout (for machines; no progress bars).",
)


class ItmGroup(click.Group):
    """A Click group that turns library errors into one line and an exit code.

    ``UsageError`` -> exit 2, other ``ItmOnnxError`` -> exit 1, anything unexpected ->
    exit 1 with one line; ``itm-onnx --debug ...`` shows the traceback instead.

    ``lazy_commands`` maps a command name to ``"module:attribute"`` under this package;
    the module is imported only when the command runs (or help lists it).
    """

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            module = importlib.import_module(f"{__package__}.{module_name}")
            self.add_command(getattr(module, attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except ItmOnnxError as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {message} (run `itm-onnx --debug ...` "
                "for the traceback)"
            ) from None


def emit(result: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (machines) or through ``human`` (people)."""
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        human(result)


def progress(message: str) -> None:
    """Progress for people goes to stderr, so that stdout stays clean for --json."""
    say(message)


def is_tty() -> bool:
    return sys.stderr.isatty()
