"""Emptied by the "one home per concern" split; nothing imports it any more.

- Delta reads and idempotent writes (``is_delta_table``, ``delta_version``,
  ``require_version``, ``read_delta``, ``write_delta``, ``merge_new_rows``,
  ``upsert_delta``, ...): :mod:`driftline.delta`;
- commit lineage (``Lineage``, ``table_input``, ``read_lineage``, ``up_to_date``):
  :mod:`driftline.lineage`;
- ``MissingTableError``: :mod:`driftline.errors`;
- Kafka batch reads and bronze records: :mod:`driftline.kafka`.
"""
