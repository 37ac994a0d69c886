"""The ``surfmap-learn`` command.

Subcommands::

    surfmap-learn volumetric ...   # 3D CNN path of BrainImageNet, J Big Data 2022 (learn.volumetric.cli)
    surfmap-learn surface ...      # 2D flat-map path of Cerebral Cortex 2022 (learn.surface.cli)

Each subcommand parses its own arguments; ``surfmap-learn volumetric --help`` lists them.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

_SUBCOMMANDS = {
    "volumetric": ("learn.volumetric.cli", "3D Inception-ResNet-V2 on GMD/GMV volumes (BrainImageNet)"),
    "surface": ("learn.surface.cli", "2D CNNs on flat-map images (Cerebral Cortex 2022)"),
}


def _usage() -> str:
    lines = ["usage: surfmap-learn {volumetric,surface} ...", "", "subcommands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in _SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a sub-package's ``cli.main(argv)``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in _SUBCOMMANDS:
        print(f"surfmap-learn: unknown subcommand {name!r}; choose one of {sorted(_SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name = _SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            print(f"surfmap-learn: the {name!r} subcommand is not available in this installation "
                  f"({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
