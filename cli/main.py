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


def main(argv=None):
    """Entry point: runs the CLI and turns user errors into one line and exit status 2."""
    from l1bn.sim.tools import ToolError

    # OSError: a path the user named is a file, a folder, missing or not writable
    user_errors = (L1BNError, ValueError, ToolError, OSError)
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        # Ctrl-C: worker processes are already killed (l1bn.sim.executors); exit now rather than
        # wait in interpreter shutdown for the pool's internal threads, which can block on a pipe
        # to a dead worker for a minute
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except click.UsageError as e:  # a bad option or value: one line too, with where to look
        where = e.ctx.command_path if e.ctx is not None else "l1bn"
        msg = " ".join(e.format_message().split())
        click.echo(f"error: {msg} (see `{where} --help`)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except user_errors as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # the simulator's own errors are user-facing too
        from l1bn.sim.simulate.runner import SimulationError

        if isinstance(e, SimulationError):
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
