"""Continuous training: ingest -> validate -> build_features -> train, now or on each alert.

    ./spark-submit.sh jobs/pipeline.py --usecase fraud --once
    ./spark-submit.sh jobs/pipeline.py --usecase fraud --on-alert
    ./spark-submit.sh jobs/pipeline.py --usecase fraud --on-alert --max-alerts 1 --timeout-s 600

Options: ``--help``. The work is :mod:`driftline.pipelines.retrain`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration or missing input,
3 a data quality limit was exceeded (nothing trained).
"""

import sys

from driftline.pipelines.retrain import main

if __name__ == "__main__":
    sys.exit(main())
