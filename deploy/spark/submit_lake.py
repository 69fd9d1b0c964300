"""Entry file for spark-submit (which runs a file, not a module); from the repository root:

    python deploy/spark/pyfiles.py smartcity.zip     # the smartcity.* layout, as installed
    SPARK_LOCAL_IP=<driver address> spark-submit --master spark://HOST:7077 \
        --jars "$(ls .cache/spark-jars/*.jar | paste -sd,)" \
        --driver-java-options "-Xss32m -XX:-DontCompileHugeMethods" \
        --py-files smartcity.zip deploy/spark/submit_lake.py stream --lake s3a://bucket/city ...

docs/lake.md ("Jars and clusters") explains each flag; tests/test_spark_cluster.py runs exactly this
against a local standalone cluster (deploy/local/spark_cluster.py).
"""
import sys

from smartcity.spark_jobs.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
