"""Argument parsing shared by every entry point in jobs/ and streaming/.

    parser = job_parser(__doc__)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args(argv)
    platform = platform_from_args(args)
"""

from __future__ import annotations

import argparse
import logging

from driftline.config import PlatformConfig, load_platform


def job_parser(doc: str | None, *, usecase: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the options all jobs share: --conf, --set, -v and
    (unless ``usecase=False``) --usecase. Its description is the module docstring."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if usecase:
        parser.add_argument("--usecase", required=True, help="use case name: conf/usecases/<name>.yaml")
    parser.add_argument("--conf", help="platform.yaml to use (default conf/platform.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set lake_root=/data/lake (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def platform_from_args(args: argparse.Namespace) -> PlatformConfig:
    """Configure logging and load the platform config the parsed arguments ask for."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("driftline").setLevel(logging.INFO)
    return load_platform(args.conf, args.overrides)
