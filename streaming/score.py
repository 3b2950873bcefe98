"""Score a use case's Kafka events online, writing predictions to Delta exactly once.

    ./spark-submit.sh streaming/score.py --usecase fraud                 # runs until stopped
    ./spark-submit.sh streaming/score.py --usecase fraud --trigger availableNow

Options: ``--help``. The work is :mod:`driftline.pipelines.score`; this file only starts it.

Exit codes: 0 stopped cleanly, 2 bad arguments or configuration, 1 the query failed.
"""

import sys

from driftline.pipelines.score import main

if __name__ == "__main__":
    sys.exit(main())
