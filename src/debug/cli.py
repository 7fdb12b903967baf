"""The `debug` command: `debug <subcommand> [options]`.

Each subcommand lives in the module that owns its concept and exposes `main(argv) -> int`; this file only
dispatches, importing the module lazily so `debug --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("debug.train_cli", "train an embedded model from a fixed seed"),
    "train-report": ("debug.train_report", "training dynamics across the checkpoints of one run"),
    "seeds": ("debug.seeds", "find seeds whose original and counterfactual the model answers correctly"),
    "patch": ("debug.causal_experiment_runner", "run and plot one full layer x token patching sweep"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `debug` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: debug <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<14}{help_text}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"debug: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
