"""Build the offline and online feature tables from silver.

    ./spark-submit.sh jobs/build_features.py --usecase fraud
    ./spark-submit.sh jobs/build_features.py --usecase eta --as-of 2024-05-01T12:00:00Z

Options: ``--help``. The work is :mod:`driftline.pipelines.build_features`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration or missing input.
"""

import sys

from driftline.pipelines.build_features import main

if __name__ == "__main__":
    sys.exit(main())
