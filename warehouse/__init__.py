"""The warehouse: the lake's data tables loaded into Amazon Redshift (through the Data API) or, as
its local stand-in, PostgreSQL 15+ (psycopg), incrementally and once per event_id.

- schema.py: the target tables from contracts/ through catalog/tables.py, plus the load's lineage;
- sql.py: every statement, one class per dialect (PostgreSQL, Redshift);
- lake.py: what an Iceberg table gained since a snapshot, and its data files read with pyarrow;
- load.py: the load into PostgreSQL (COPY FROM STDIN, MERGE), retries, the crash-test hook;
- redshift.py: the Data API client and the load into Redshift (COPY FORMAT AS PARQUET);
- __main__.py: smartcity-warehouse load | ddl | spectrum.

A service beside the others: it imports the ground (contracts, runtime, catalog) only.
Details: docs/warehouse.md.
"""
