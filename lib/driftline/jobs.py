"""The one way a job or stream starts: arguments, logging, configuration, session, exit codes.

Every entry point in ``jobs/`` and ``streaming/`` is a call of :func:`entry_point`
from a module of :mod:`driftline.pipelines`, which owns the job's arguments and its
``run(ctx)``::

    main = entry_point("ingest", __doc__, run=_run, arguments=_arguments)
    sys.exit(main())        # in jobs/ingest.py: ./spark-submit.sh jobs/ingest.py --usecase fraud

Exit codes: 0 done, 1 a streaming query failed, 2 bad arguments, configuration or
missing input (one line on stderr naming the problem), 3 a data-quality limit was exceeded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from driftline.config import PlatformConfig, UseCaseConfig, load_platform, load_usecase
from driftline.errors import DataQualityError, DriftlineError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUALITY = 0, 1, 2, 3


def job_parser(doc: str | None, *, usecase: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the options all jobs share: --conf, --set, -v and
    (unless ``usecase=False``) --usecase. Its description is ``doc``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if usecase:
        parser.add_argument("--usecase", required=True,
                            help="use case name (conf/usecases/<name>.yaml) or a path to its YAML")
    parser.add_argument("--conf", help="platform.yaml to use (default conf/platform.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set lake_root=/data/lake (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("driftline").setLevel(logging.INFO)


@dataclass
class JobContext:
    """What a job runs with: its arguments, the loaded configuration and, on first use, Spark."""

    name: str
    args: argparse.Namespace
    platform: PlatformConfig
    usecase: UseCaseConfig | None = None
    _spark: SparkSession | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, name: str, args: argparse.Namespace) -> JobContext:
        platform = load_platform(args.conf, args.overrides)
        usecase = load_usecase(args.usecase) if getattr(args, "usecase", None) else None
        return cls(name, args, platform, usecase)

    @property
    def uc(self) -> UseCaseConfig:
        if self.usecase is None:
            raise DriftlineError(f"{self.name}: this job needs --usecase")
        return self.usecase

    @property
    def app_name(self) -> str:
        return f"driftline-{self.name}" + (f"-{self.usecase.name}" if self.usecase else "")

    @property
    def spark(self) -> SparkSession:
        """The session, built on first use (so configuration errors come before the JVM starts)."""
        if self._spark is None:
            from driftline.session import build_session

            self._spark = build_session(self.platform, self.app_name)
        return self._spark


Run = Callable[[JobContext], int | None]
Arguments = Callable[[argparse.ArgumentParser], None]
Check = Callable[[argparse.ArgumentParser, argparse.Namespace], None]


def entry_point(
    name: str, doc: str | None, *, run: Run, arguments: Arguments | None = None, check: Check | None = None,
    usecase: bool = True, preflight: Callable[[JobContext], None] | None = None,
) -> Callable[[list[str] | None], int]:
    """Build ``main(argv) -> exit code`` for job ``name``.

    ``arguments`` adds the job's own options, ``check`` rejects bad combinations with
    ``parser.error`` (exit 2, usage on stderr), ``preflight`` checks what the job will
    talk to before anything starts (:func:`driftline.preflight.needs`: the broker, the
    MLflow store), ``run`` does the work and may return an exit code. Driftline's own
    errors become one line on stderr and exit code 2 (3 for a data-quality limit);
    anything else is a bug and shows its traceback.

    Example::

        main = entry_point("train", __doc__, run=lambda ctx: train.run(ctx.spark, ctx.platform, ctx.uc) and None)
    """

    def main(argv: list[str] | None = None) -> int:
        parser = job_parser(doc, usecase=usecase)
        if arguments is not None:
            arguments(parser)
        args = parser.parse_args(argv)
        if check is not None:
            check(parser, args)
        configure_logging(args.verbose)
        try:
            ctx = JobContext.from_args(name, args)
            if preflight is not None:
                preflight(ctx)  # before Spark starts and before anything is written
            code = run(ctx)
        except DataQualityError as e:
            print(f"{name}: data quality limit exceeded: {e}", file=sys.stderr)
            return EXIT_QUALITY
        except DriftlineError as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK if code is None else code

    return main
