"""smartcity's Spark side: Kafka -> validated, deduplicated Apache Iceberg tables in the lake's catalog.

    from smartcity.spark_jobs import settings, session, lake
    s = settings.load(overrides={"bootstrap": "127.0.0.1:9092", "lake": "lake"})
    spark = session.build_session(s, iceberg=True)
    query = lake.build_query(spark, s)     # StreamingQuery; query.lake_writer.totals counts rows

CLI: `smartcity-lake stream|maintain|tables` (python -m spark_jobs). See docs/lake.md.
The tables' definitions are catalog/tables.py; what the catalog holds: `smartcity-catalog show|diff`.
"""
