"""The closed loop in one driver: online scoring, the monitor raising alerts, retraining on
each alert into shadow, and progressive delivery to champion (or back).

    ./spark-submit.sh streaming/loop.py --usecase fraud              # until stopped
    ./spark-submit.sh streaming/loop.py --usecase fraud --until settled --timeout-s 900

Options: ``--help``. The work is :mod:`driftline.pipelines.loop`; this file only starts it.

Exit codes: 0 stopped cleanly, 1 a query failed, 2 bad arguments or configuration, 4 timed out.
"""

import sys

from driftline.pipelines.loop import main

if __name__ == "__main__":
    sys.exit(main())
