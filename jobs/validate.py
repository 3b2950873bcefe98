"""Validate bronze into silver with quarantine and a quality report.

    ./spark-submit.sh jobs/validate.py --usecase fraud

Options: ``--help``. The work is :mod:`driftline.pipelines.validate`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration or missing input,
3 a data quality limit was exceeded.
"""

import sys

from driftline.pipelines.validate import main

if __name__ == "__main__":
    sys.exit(main())
