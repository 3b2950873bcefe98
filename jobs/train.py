"""Train, log to MLflow, register as challenger and run the quality gate.

    ./spark-submit.sh jobs/train.py --usecase fraud
    ./spark-submit.sh jobs/train.py --usecase eta --data-version 12
    ./spark-submit.sh jobs/train.py --usecase fraud --no-gate

Options: ``--help``. The work is :mod:`driftline.pipelines.train`; this file only starts it.

Exit codes: 0 trained (whether or not the gate promoted), 2 bad arguments,
configuration or missing input.
"""

import sys

from driftline.pipelines.train import main

if __name__ == "__main__":
    sys.exit(main())
