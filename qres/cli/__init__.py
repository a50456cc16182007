"""The ``qres`` command line: a typer app, one module per command group.

Errors reach the user as one line on stderr (``qres: error: ...``) with the exit code of the
error type (see :mod:`qres.kernel.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import typer

from qres import __version__
from qres.kernel.errors import QresError, UsageError
from qres.kernel.outputs import checked_stdout


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qres {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """Deterministic, learned compression of sensor streams, and swarms that learn it."""
    # --debug is read by main() before parsing, so that errors while parsing also show a
    # traceback; declaring it here documents it in --help.


def make_app() -> typer.Typer:
    """Build the CLI: the built-in command groups plus every plugin's ``register_commands``."""
    from qres.cli import (
        aggregate_cmd,
        audit_cmd,
        bench_cmd,
        codec_cmd,
        keys_cmd,
        llm_cmd,
        lora_cmd,
        mesh_cmd,
        node_cmd,
        plugins_cmd,
        profiles_cmd,
        swarm_cmd,
    )
    from qres.kernel import plugins

    app = typer.Typer(
        name="qres",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    codec_cmd.register(app)
    aggregate_cmd.register(app)
    audit_cmd.register(app)
    app.add_typer(plugins_cmd.app, name="plugins")
    app.add_typer(profiles_cmd.app, name="profiles")
    swarm_cmd.register(app)
    app.add_typer(keys_cmd.app, name="keys")
    bench_cmd.register(app)
    llm_cmd.register(app)
    lora_cmd.register(app)
    mesh_cmd.register(app)
    node_cmd.register(app)
    plugins.load_plugins()
    plugins.pm.hook.register_commands(app=app)
    for name, reason in plugins.load_failures:
        warn(
            f"plugin {name!r} failed to load ({reason}); the others work. "
            "Fix or uninstall it, or exclude it with QRES_PLUGINS"
        )
    return app


def warn(message: str) -> None:
    """Print a one-line warning to stderr."""
    print(f"qres: warning: {message}", file=sys.stderr)


def fail(error: BaseException) -> int:
    """Report an error as one line and return the exit code for it."""
    code = getattr(error, "exit_code", 1)
    print(f"qres: error: {error}", file=sys.stderr)
    return code


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: unwinds the command (every output removes its temporary
    file) up to :func:`main`, which exits 128 + the signal's number.

    Not a KeyboardInterrupt: click would turn that into a silent exit 130.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def _catch_signals() -> dict:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted`; return the replaced handlers."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # only the main thread may set handlers; an embedding program decides
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        old = signal.getsignal(number)
        if old is signal.SIG_IGN:
            continue  # nohup, or a background job's SIGINT: an ignored signal stays ignored
        previous[number] = old
        signal.signal(number, _raise_interrupted)
    return previous


def _parser_errors() -> tuple[type, tuple[type, ...]]:
    """The usage-error and abort classes of the click that typer runs on: its own vendored copy
    in newer typer releases (which do not install click at all), the click package in older
    ones."""
    usage = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    module = sys.modules[usage.__module__]
    return usage, tuple({typer.Abort, getattr(module, "Abort", typer.Abort)})


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``qres`` console script."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("QRES_DEBUG"))
    usage_error, aborts = _parser_errors()
    previous = _catch_signals()
    restore = checked_stdout()
    try:
        try:
            code = make_app()(args=args, prog_name="qres", standalone_mode=False)
        except SystemExit as done:
            if not done.code:
                sys.stdout.flush()  # here, not at exit: a full stdout must fail the command
            raise
        sys.stdout.flush()  # here, not at exit: a full stdout must fail the command
    except usage_error as exc:
        # One line like every other error (click's framed block is many lines).
        if debug:
            raise
        message = exc.format_message().rstrip(".")
        if not message:  # a bare group name: typer has printed its help
            sys.exit(2)
        command = exc.ctx.command_path if exc.ctx is not None else "qres"
        sys.exit(fail(UsageError(f"{message}; see '{command} --help'")))
    except aborts:
        print("qres: interrupted", file=sys.stderr)
        sys.exit(130)
    except QresError as exc:
        if debug:
            raise
        sys.exit(fail(exc))
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        sys.exit(fail(QresError(f"{where}{exc.strerror or exc}")))
    except MemoryError:
        # The decoder checks sizes before it allocates; this is the last line of defence.
        if debug:
            raise
        sys.exit(fail(QresError("out of memory; free some memory or use a larger machine")))
    except (Interrupted, KeyboardInterrupt) as exc:
        print("qres: interrupted", file=sys.stderr)
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    finally:
        restore()
        for number, handler in previous.items():
            signal.signal(number, handler)
    # As click's standalone mode does: always leave through SystemExit with the code.
    sys.exit(code if isinstance(code, int) else 0)
