#!/usr/bin/env bash
# Submit a driftline job or streaming query to Spark: local, standalone, YARN or Kubernetes.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./spark-submit.sh [--master URL] [--deploy-mode client|cluster] [--conf k=v ...] FILE [JOB ARGS...]

Submits FILE (a module under jobs/ or streaming/) with spark-submit, shipping the
driftline library (lib/ zipped, via --py-files) and the Delta + Kafka connector
jars from the cache `make setup` fills (.driftline/jars/spark, via --jars).

  --master URL        local[*] (default), spark://host:7077, yarn, k8s://https://host:443
                      (also taken from $SPARK_MASTER)
  --deploy-mode MODE  client (default) or cluster
  --conf k=v          any Spark setting, repeatable (e.g. --conf spark.executor.memory=4g)
  -h, --help          this text

Everything after FILE goes to the job; every job has --help of its own:
  ./spark-submit.sh jobs/ingest.py --help

Examples:
  ./spark-submit.sh jobs/ingest.py --usecase fraud
  ./spark-submit.sh --master spark://localhost:7077 jobs/train.py --usecase eta
  SPARK_MASTER=yarn ./spark-submit.sh streaming/score.py --usecase fraud

Environment: SPARK_MASTER, SPARK_SUBMIT (path of spark-submit; default the one
in .venv), PYSPARK_PYTHON (Python on the executors; default .venv/bin/python for
local masters), DRIFTLINE_* configuration overrides (see conf/platform.yaml).
USAGE
}

root=$(cd "$(dirname "$0")" && pwd)
master=${SPARK_MASTER:-local[*]}
deploy_mode=client
spark_conf=()

while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --master) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --master needs a value" >&2; exit 2; }
              master=$2; shift 2 ;;
    --master=*) master=${1#*=}; shift ;;
    --deploy-mode) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --deploy-mode needs a value" >&2; exit 2; }
                   deploy_mode=$2; shift 2 ;;
    --conf) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --conf needs k=v" >&2; exit 2; }
            spark_conf+=(--conf "$2"); shift 2 ;;
    -*) echo "spark-submit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done

if [[ $# -lt 1 ]]; then
  usage >&2
  exit 2
fi
file=$1; shift
case $file in
  jobs/*.py|streaming/*.py|*/jobs/*.py|*/streaming/*.py) ;;
  *) echo "spark-submit.sh: $file is not a module under jobs/ or streaming/" >&2; exit 2 ;;
esac
[[ -f $file ]] || { echo "spark-submit.sh: $file does not exist" >&2; exit 2; }

submit=${SPARK_SUBMIT:-$root/.venv/bin/spark-submit}
[[ -x $submit ]] || { echo "spark-submit.sh: $submit not found: run 'make setup' first" >&2; exit 1; }
jar_dir=${DRIFTLINE_JARS_DIR:-$root/.driftline/jars}/spark
compgen -G "$jar_dir/delta-spark*.jar" >/dev/null || {
  echo "spark-submit.sh: no jars in $jar_dir: run 'make setup' first" >&2; exit 1; }
jars=$(ls "$jar_dir"/*.jar | paste -sd, -)

# lib/ shipped as a zip so executors import the same driftline code as the driver
build=$root/.driftline/build
mkdir -p "$build"
zip_file=$build/driftline-lib.zip
(cd "$root/lib" && rm -f "$zip_file" && "$root/.venv/bin/python" -m zipfile -c "$zip_file" driftline >/dev/null)

if [[ $master == local* ]]; then
  export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$root/.venv/bin/python}
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
fi
export DRIFTLINE_HOME=${DRIFTLINE_HOME:-$root}
export PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}"

exec "$submit" \
  --master "$master" \
  --deploy-mode "$deploy_mode" \
  --jars "$jars" \
  --py-files "$zip_file" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --driver-java-options "-Dlog4j2.configurationFile=file:$root/conf/log4j2.properties" \
  ${spark_conf[@]+"${spark_conf[@]}"} \
  "$file" "$@"
