"""Monitor a use case's stream per event-time window against the reference profile.

    ./spark-submit.sh streaming/monitor.py --usecase fraud                        # all there is, then stop
    ./spark-submit.sh streaming/monitor.py --usecase fraud --trigger '30 seconds' # until stopped
    ./spark-submit.sh streaming/monitor.py --usecase fraud --sources events --profile ref.json

Options: ``--help``. The work is :mod:`driftline.pipelines.monitor`; this file only starts it.

Exit codes: 0 done, 2 bad arguments, configuration or missing input (no champion, no predictions table).
"""

import sys

from driftline.pipelines.monitor import main

if __name__ == "__main__":
    sys.exit(main())
