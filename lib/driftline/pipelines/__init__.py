"""What the jobs and streams run, as a library: each module has ``run(...)`` for code and
tests, and ``main`` (:func:`driftline.jobs.entry_point`) that ``jobs/*.py`` and
``streaming/*.py`` call.

Batch: :mod:`ingest`, :mod:`validate`, :mod:`build_features`, :mod:`train`,
:mod:`batch_score`, :mod:`retrain` (the four steps as one pipeline, now or on each
drift alert). Streams: :mod:`score`, :mod:`monitor`, :mod:`kafka_to_delta`.

    from driftline.pipelines import ingest, validate
    ingest.run(spark, platform, uc)       # {'events': 400, 'labels': 398}
"""
