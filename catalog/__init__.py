"""The lake's Apache Iceberg catalog as every part of the project sees it (the ground, beside
contracts and runtime): where the lake and its catalog are (location.py), reading a table's current
snapshot without Spark (reader.py), and what the catalog holds against what contracts/ defines
(inspect.py; CLI `smartcity-catalog show|diff`)."""
