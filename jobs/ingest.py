"""Ingest a use case's Kafka topics (or simulator files) into bronze Delta tables.

    ./spark-submit.sh jobs/ingest.py --usecase fraud
    ./spark-submit.sh jobs/ingest.py --usecase fraud --from-files .driftline/sim/fraud
    ./spark-submit.sh jobs/ingest.py --usecase eta --starting-offsets earliest

Options: ``--help``. The work is :mod:`driftline.pipelines.ingest`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration or missing input.
"""

import sys

from driftline.pipelines.ingest import main

if __name__ == "__main__":
    sys.exit(main())
