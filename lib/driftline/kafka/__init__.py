"""Everything Kafka, one module per concern.

- :mod:`driftline.kafka.clients`: plain clients outside Spark: the confluent-kafka
  producer and consumer, and topic administration with kafka-python's
  ``KafkaAdminClient`` (create missing topics, describe partitions);
- :mod:`driftline.kafka.broker`: the embedded single-node KRaft broker behind
  ``driftline kafka start | stop | status``;
- :mod:`driftline.kafka.spark`: Spark's Kafka source and sink: streaming and
  batch readers, bronze records, offset ranges, the Delta streaming sink.

Importing this package imports none of them (and never pyspark).
"""
