"""The `debug` command: `debug <subcommand> [options]`.

Each subcommand lives in the package that owns its concept, as a function `(argv) -> int` named here as
"module:function"; this file only dispatches, importing that module on use: `debug --help` never loads torch.
"""

from __future__ import annotations

import importlib
import sys

from debug import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("debug.train.cli:main_train", "train a small binder model from a fixed seed"),
    "train-report": ("debug.train.cli:main_report", "training dynamics across the checkpoints of one run"),
    "seeds": (
        "debug.causal.cli:main_seeds",
        "find seeds whose original and counterfactual the model answers correctly",
    ),
    "patch": ("debug.causal.cli:main_patch", "run and plot one full layer x token patching sweep"),
    "compare": ("debug.plugin.compare_cli:main", "compare two saved runs case by case (no model loaded)"),
}


USAGE = """usage: debug <command> [options]      (debug <command> --help for its options)
       debug --version

The evals themselves run under pytest, with the plugin this package installs:
  pytest evals -k variable_binding                run the eval suite on the embedded default model
  pytest evals --model MODEL --gate "variable_binding:accuracy>=0.9"   gate a model in CI (docs/plugin.md)

commands:"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `debug` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<14}{help_text}")
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"debug {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"debug: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # "module:function" names the entry point; a bare module name means its `main`.
    module_name, _, function = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
