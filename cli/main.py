"""The ``l1bn`` command line: doctor, train, export, infer, verilog, sim, report, build, demo.

Each command lives in its own module and is imported only when it runs, so ``l1bn --help`` is fast
and a command's heavy imports (torch, amaranth, cocotb) cost nothing to the others.
Errors a user can cause (bad values, missing tools, bad files) print one ``error:`` line and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

# name -> (module, attribute, one-line help). The help is here so that --help imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": ("l1bn.cli.doctor", "doctor", "Check the toolchain and print what is missing."),
    "train": ("l1bn.cli.train", "train", "Quantization-aware (or --integer: integer-only) training on the digits data."),
    "export": ("l1bn.cli.export", "export", "Export a trained run to integer weights for the hardware."),
    "infer": ("l1bn.cli.export", "infer", "Run the integer reference on an export."),
    "import": ("l1bn.cli.import_cmd", "import_", "Import a QONNX model (Brevitas, FINN) as an export."),
    "verilog": ("l1bn.cli.verilog", "verilog", "Generate Verilog for a design."),
    "sim": ("l1bn.cli.sim", "sim", "Simulate a design or an exported network with cocotb."),
    "report": ("l1bn.cli.report", "report", "Area, Fmax, latency and energy: L1-BN against L2-BN."),
    "sweep": ("l1bn.cli.sweep", "sweep", "Design-space sweep on local processes or a Dask cluster."),
    "build": ("l1bn.cli.build", "build", "Build a bitstream for an FPGA board (open tools)."),
    "demo": ("l1bn.cli.demo", "demo", "Train, export, generate, simulate and summarize, end to end."),
    "prove": ("l1bn.cli.prove", "prove", "Formal proofs: stream rules, no lost element, no overflow."),
}


class L1BNError(Exception):
    """An error the user can fix; printed as one line by the CLI."""


class LazyGroup(click.Group):
    """A click group whose subcommands are ``(module, attribute, help)`` entries imported on use.

    Subclasses (or instances, through ``commands=``) set ``lazy_commands``.
    """

    lazy_commands: dict[str, tuple[str, str, str]] = COMMANDS

    def __init__(self, *args, commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(commands, dict) and commands and isinstance(next(iter(commands.values())), tuple):
            self.lazy_commands = commands

    def list_commands(self, ctx):
        return list(self.lazy_commands)

    def get_command(self, ctx, name):
        if name not in self.lazy_commands:
            return None
        module, attr, _ = self.lazy_commands[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("l1bn"):
                return _unavailable(name, f"`{ctx.command_path} {name}` is not available in this build ({e.name} is missing)")
            return _unavailable(name, f"`{ctx.command_path} {name}` needs {e.name}: run  make install")

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in self.lazy_commands.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name, message):
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd():
        raise L1BNError(message)
    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="l1bn")
def cli():
    """l1bn: low-bit networks with L1-norm batch normalization, from PyTorch to verified Verilog."""


# the signals that stop a command the way Ctrl-C does (exit status 128 + the signal)
_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_received: list[int] = []


def _on_signal(signum, frame):
    """SIGTERM and SIGHUP stop a command as Ctrl-C does: an exception in the main thread, so that
    every ``finally`` runs (temporary files removed, child process groups killed)."""
    _received.append(signum)
    raise KeyboardInterrupt


def _install_signal_handlers() -> dict:
    """Install :func:`_on_signal` for SIGTERM and SIGHUP; return the handlers it replaced."""
    import signal

    old = {}
    for name in _STOP_SIGNALS[1:]:
        sig = getattr(signal, name)
        try:
            old[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):   # not the main thread (an embedding program): leave them
            break
    return old


def _ignore_signals() -> None:
    """After the command finished (outputs whole): a late Ctrl-C or SIGTERM no longer kills the
    interpreter while it shuts down (Python restores SIG_DFL for its own handlers then, which
    gave exit status -2 instead of 130); an ignored disposition is kept, so the exit is 0."""
    import signal

    for name in _STOP_SIGNALS:
        try:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        except (ValueError, OSError):
            return


def _cleanup(*, whole: bool) -> None:
    """On any failure: kill every child process group, then remove the folders the command
    claimed new (marker only; ``whole``: whatever they hold)."""
    from l1bn.sim.executors import kill_children
    from l1bn.spec.outdir import abandon_claims

    kill_children()
    abandon_claims(whole=whole)


def _disk_full(e: BaseException) -> str | None:
    """One line when ``e`` or an exception it came from is a full disk (ENOSPC, EDQUOT)."""
    from l1bn.spec.outdir import disk_error

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and disk_error(e):
            return disk_error(e)
        e = e.__cause__ or e.__context__
    return None


def main(argv=None):
    """Entry point: runs the CLI and turns user errors into one line and exit status 2.

    ``argv=None`` (the ``l1bn`` program): the process ends with the command. With ``argv`` (a
    caller in Python, the tests) the signal handlers are restored afterwards.
    """
    import signal

    _received.clear()
    old = _install_signal_handlers()
    try:
        _main(argv)
    finally:
        if argv is None:
            _ignore_signals()
        else:
            for sig, h in old.items():
                signal.signal(sig, h)


def _main(argv):
    from l1bn.sim.tools import ToolError
    from l1bn.spec.outdir import keep_claims

    # OSError: a path the user named is a file, a folder, missing or not writable
    user_errors = (L1BNError, ValueError, ToolError, OSError)
    try:
        try:
            cli.main(args=argv, standalone_mode=False)
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        # Ctrl-C, SIGTERM, SIGHUP: children killed, half-made outputs removed; exit now rather
        # than wait in interpreter shutdown for a pool's internal threads, which can block on a
        # pipe to a dead worker for a minute
        _ignore_signals()   # a second Ctrl-C must not cut the cleanup short
        _cleanup(whole=True)
        click.echo("aborted", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + (_received[-1] if _received else 2))
    except click.UsageError as e:  # a bad option or value: one line too, with where to look
        _cleanup(whole=False)
        where = e.ctx.command_path if e.ctx is not None else "l1bn"
        msg = " ".join(e.format_message().split())
        click.echo(f"error: {msg} (see `{where} --help`)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        _cleanup(whole=False)
        click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        _cleanup(whole=False)
        sys.exit(e.exit_code)
    except SystemExit as e:   # a command's own exit status (prove: a property failed)
        if e.code not in (0, None):
            _cleanup(whole=False)
        else:
            keep_claims()
        raise
    except user_errors as e:
        full = _disk_full(e)
        _cleanup(whole=full is not None)
        click.echo(f"error: {full or e}", err=True)
        sys.exit(2)
    except Exception as e:  # the simulator's own errors are user-facing too
        from l1bn.sim.simulate.runner import SimulationError

        full = _disk_full(e)
        _cleanup(whole=full is not None)
        if full is not None:
            click.echo(f"error: {full}", err=True)
            sys.exit(2)
        if isinstance(e, SimulationError):
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        raise
    keep_claims()


if __name__ == "__main__":
    main()
