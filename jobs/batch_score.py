"""Batch prediction with the model behind an alias, natively in the JVM.

    ./spark-submit.sh jobs/batch_score.py --usecase fraud
    ./spark-submit.sh jobs/batch_score.py --usecase eta --alias challenger --batch-date 2024-05-01
    ./spark-submit.sh jobs/batch_score.py --usecase fraud --table /data/lake/gold/fraud_features_offline

Options: ``--help``. The work is :mod:`driftline.pipelines.batch_score`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration, missing input or model.
"""

import sys

from driftline.pipelines.batch_score import main

if __name__ == "__main__":
    sys.exit(main())
