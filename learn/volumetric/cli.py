"""``surfmap-learn volumetric`` subcommands.

::

    surfmap-learn volumetric synth --out DIR [--sites 6 --per-site 40 --mci-per-site 0 --spacing 3]
    surfmap-learn volumetric train --config FILE [--set section.key=value ...]

``synth`` writes a SYNTHETIC cohort (NIfTI + ``SYNTHETIC_cohort.csv``) with planted effects; ``train`` runs the
cross-validation described by the config (see :mod:`learn.volumetric.config`) and writes checkpoints, the resolved
config, predictions and ``results.json`` to ``output_dir``. Multi-GPU: ``torchrun --nproc-per-node N -m
learn.volumetric.cli train --config FILE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from surfmap.exceptions import SurfmapError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surfmap-learn volumetric", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write a SYNTHETIC cohort with planted effects")
    s.add_argument("--out", required=True)
    s.add_argument("--sites", type=int, default=6)
    s.add_argument("--per-site", type=int, default=40)
    s.add_argument("--mci-per-site", type=int, default=0)
    s.add_argument("--spacing", type=float, default=3.0)
    s.add_argument("--effect", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="cross-validate a model from a config file")
    t.add_argument("--config", required=True, help="TOML or JSON file (see learn.volumetric.config)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=2")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "synth":
            from learn.volumetric.synthetic import make_synthetic_cohort

            csv = make_synthetic_cohort(args.out, n_sites=args.sites, n_per_site=args.per_site,
                                        n_mci_per_site=args.mci_per_site, spacing=args.spacing,
                                        effect=args.effect, seed=args.seed)
            print(f"SYNTHETIC cohort written: {csv}")
        elif args.cmd == "train":
            from learn.volumetric.train import load_volumetric_config, run_experiment

            res = run_experiment(load_volumetric_config(args.config, args.set))
            summary = {k: res[k] for k in ("cv", "test") if k in res}
            print(json.dumps({"output_dir": res["output_dir"], "synthetic": res["synthetic"], **summary},
                             indent=2, default=str))
        return 0
    except (SurfmapError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"surfmap-learn volumetric: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
