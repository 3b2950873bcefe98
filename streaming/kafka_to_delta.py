"""Copy a Kafka topic into a Delta table as raw records, exactly once.

    ./spark-submit.sh streaming/kafka_to_delta.py --topic fraud.events \\
        --table bronze/fraud_events_raw --trigger availableNow

Options: ``--help``. The work is :mod:`driftline.pipelines.kafka_to_delta`; this file only starts it.
"""

import sys

from driftline.pipelines.kafka_to_delta import main

if __name__ == "__main__":
    sys.exit(main())
