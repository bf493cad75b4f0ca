"""The ``jetsplit`` command: one dispatcher, one ``main(argv) -> int`` per subcommand.

Subcommands are looked up in an explicit table and imported only when run, so
``jetsplit eval`` on a board never imports the cloud worker, and the core package
does not import the sides (edge, cloud, calibration, tools) at import time.

A ``JetsplitError`` becomes one line on stderr and exit status 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from jetsplit import __version__
from jetsplit.errors import JetsplitError
from jetsplit.quiet import quiet_native_logs

__all__ = ["COMMANDS", "entry", "main"]

# subcommand -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("jetsplit.cli.eval:main", "evaluate a bundle's chain on a labelled dataset"),
    "demo": ("jetsplit.cli.demo:main", "run the built-in demo"),
    "keys": ("jetsplit.protocol.keys:main", "generate CurveZMQ key pairs"),
    "cloud": ("jetsplit.cloud.cli:main", "cloud worker: `jetsplit cloud serve ...`"),
    "edge": ("jetsplit.edge.cli:main", "edge agent: `jetsplit edge run ...`"),
    "profile": ("jetsplit.tools.profile_cmd:main", "list a model's candidate cut points"),
    "split": ("jetsplit.calibration.cli:split_main", "cut a model into head and tail"),
    "calibrate": ("jetsplit.calibration.calibrate:main", "build a tuned bundle from models and data"),
    "collect": ("jetsplit.calibration.collect:main", "record a trace of a bundle over a dataset"),
    "tune": ("jetsplit.tools.tune:main", "choose thresholds from a trace"),
    "report": ("jetsplit.tools.report:main", "write a report of a tuned bundle"),
    "plan": ("jetsplit.tools.plan:main", "fleet capacity planning"),
    "bench": ("jetsplit.tools.bench:main", "time each stage of a bundle on this device"),
    "power": ("jetsplit.tools.power:main", "read the board's power rails"),
    "top": ("jetsplit.tools.top:main", "live view of a running edge agent"),
    "describe": ("jetsplit.tools.describe:main", "what a worker serves: bundles, stages, tensors, limits"),
    "conformance": ("jetsplit.tools.conformance:main", "check a worker against protocol/SPEC.md"),
    "simboard": ("jetsplit.tools.simboard:main", "a simulated Jetson whose power rails follow a process's load"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: jetsplit COMMAND [ARGS...]   (jetsplit --version; jetsplit COMMAND --help)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int] | None:
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "this command is not built yet" is a user-facing condition; a missing
        # third-party import inside an existing module is a bug and must propagate.
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise
    func: Callable[[Sequence[str]], int] | None = getattr(module, func_name, None)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"jetsplit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"jetsplit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    quiet_native_logs()  # before any command opens a camera or a stream
    func = _resolve(COMMANDS[name][0])
    if func is None:
        print(f"jetsplit: command {name!r} is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(func(rest))
    except JetsplitError as exc:
        print(f"jetsplit {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
