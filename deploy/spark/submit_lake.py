"""Entry file for spark-submit (which runs a file, not a module):

    spark-submit --master spark://HOST:7077 --jars "$(ls .cache/spark-jars/*.jar | paste -sd,)" \
        --py-files smartcity.zip deploy/spark/submit_lake.py stream --lake s3a://bucket/city ...
"""
import sys

from spark_jobs.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
