#!/usr/bin/env bash
# Submit a driftline job or streaming query to Spark: local, standalone, YARN or Kubernetes.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./spark-submit.sh [--master URL] [--deploy-mode client|cluster] [--image-home DIR]
                         [--archives LIST] [--conf k=v ...] FILE [JOB ARGS...]

Submits FILE (a module under jobs/ or streaming/) with spark-submit, shipping the
driftline library (lib/ zipped, via --py-files) and the Delta + Kafka connector
jars from the cache `make setup` fills (.driftline/jars/spark, via --jars; with
the S3A connector for s3a:// lakes from .driftline/jars/object-store).

  --master URL        local[*] (default), spark://host:7077, yarn, k8s://https://host:443
                      (also taken from $SPARK_MASTER)
  --deploy-mode MODE  client (default) or cluster (YARN, Kubernetes). In cluster mode
                      the driver runs on a cluster node, so conf/ goes along too
                      (--archives, unpacked as ./conf beside it; YARN reads it there)
  --image-home DIR    the driver and executors run the project image (Dockerfile),
                      whose checkout is DIR (/opt/driftline): FILE, the library and
                      the jars are taken from the image (local://DIR/FILE, the jars
                      on the class path) and nothing is shipped. Needed on
                      Kubernetes in cluster mode
  --archives LIST     more archives unpacked beside the driver and executors
                      (file#dir, comma-separated), e.g. a packed venv on YARN
  --conf k=v          any Spark setting, repeatable (e.g. --conf spark.executor.memory=4g)
  -h, --help          this text

Everything after FILE goes to the job; every job has --help of its own:
  ./spark-submit.sh jobs/ingest.py --help

Examples:
  ./spark-submit.sh jobs/ingest.py --usecase fraud
  ./spark-submit.sh --master spark://localhost:7077 jobs/train.py --usecase eta
  SPARK_MASTER=yarn ./spark-submit.sh streaming/score.py --usecase fraud
  ./spark-submit.sh --master k8s://https://host:443 --deploy-mode cluster --image-home /opt/driftline \
      --conf spark.kubernetes.container.image=registry/driftline:0.1.0 jobs/ingest.py --usecase fraud

Environment: SPARK_MASTER, SPARK_SUBMIT (path of spark-submit; default the one
in .venv, else spark-submit on PATH as in the project image), PYSPARK_PYTHON
(Python on the executors; default .venv/bin/python for local masters),
DRIFTLINE_* configuration overrides (see conf/platform.yaml; they reach a driver
running here, not one in the cluster: pass --set key=value to the job instead).
USAGE
}

root=$(cd "$(dirname "$0")" && pwd)
master=${SPARK_MASTER:-local[*]}
deploy_mode=client
image_home=
archives=
spark_conf=()

while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --master) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --master needs a value" >&2; exit 2; }
              master=$2; shift 2 ;;
    --master=*) master=${1#*=}; shift ;;
    --deploy-mode) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --deploy-mode needs a value" >&2; exit 2; }
                   deploy_mode=$2; shift 2 ;;
    --image-home) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --image-home needs a directory" >&2; exit 2; }
                  image_home=${2%/}; shift 2 ;;
    --image-home=*) image_home=${1#*=}; image_home=${image_home%/}; shift ;;
    --archives) [[ $# -ge 2 ]] || { echo "spark-submit.sh: --archives needs file#dir[,...]" >&2; exit 2; }
                archives=$2; shift 2 ;;
    --archives=*) archives=${1#*=}; shift ;;
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
case $deploy_mode in
  client|cluster) ;;
  *) echo "spark-submit.sh: --deploy-mode: got '$deploy_mode', expected client or cluster" >&2; exit 2 ;;
esac
if [[ $master == k8s://* && $deploy_mode == cluster && -z $image_home ]]; then
  echo "spark-submit.sh: on Kubernetes in cluster mode the driver runs in the project image:" \
       "add --image-home /opt/driftline (and --conf spark.kubernetes.container.image=IMAGE)" >&2
  exit 2
fi

# the venv `make setup` creates, else what is on PATH (the project image has no venv)
python=$root/.venv/bin/python
[[ -x $python ]] || python=$(command -v python3 || true)
submit=${SPARK_SUBMIT:-$root/.venv/bin/spark-submit}
if [[ -z ${SPARK_SUBMIT:-} && ! -x $submit ]]; then submit=$(command -v spark-submit || echo "$submit"); fi
[[ -x $submit ]] || { echo "spark-submit.sh: $submit not found: run 'make setup' first" >&2; exit 1; }
if [[ -z ${SPARK_SUBMIT:-} && -z ${SPARK_HOME:-} ]]; then
  # pyspark's spark-submit looks for its Spark with $PYSPARK_PYTHON or python3: tell it instead
  SPARK_HOME=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') && export SPARK_HOME
fi

if [[ -n $image_home ]]; then
  # Everything is in the image already: the job file, the library (installed in its
  # Python) and the connector jars (resolved from the same conf/jvm poms).
  [[ $file =~ (^|/)((jobs|streaming)/.*\.py)$ ]]
  app=local://$image_home/${BASH_REMATCH[2]}
  image_jars="$image_home/.driftline/jars/spark/*:$image_home/.driftline/jars/object-store/*"
  ship=(--conf "spark.driver.extraClassPath=$image_jars" --conf "spark.executor.extraClassPath=$image_jars")
  [[ -z $archives ]] || ship+=(--archives "$archives")
  log4j=file:$image_home/conf/log4j2.properties
else
  jar_dir=${DRIFTLINE_JARS_DIR:-$root/.driftline/jars}/spark
  compgen -G "$jar_dir/delta-spark*.jar" >/dev/null || {
    echo "spark-submit.sh: no jars in $jar_dir: run 'make setup' first" >&2; exit 1; }
  jars=$(ls "$jar_dir"/*.jar | paste -sd, -)
  # the S3A connector (s3a:// lakes), when bin/fetch-jars has resolved it
  object_store=${DRIFTLINE_JARS_DIR:-$root/.driftline/jars}/object-store
  if compgen -G "$object_store/*.jar" >/dev/null; then jars+=,$(ls "$object_store"/*.jar | paste -sd, -); fi

  # lib/ shipped as a zip so executors import the same driftline code as the driver
  build=$root/.driftline/build
  mkdir -p "$build"
  zip_file=$build/driftline-lib.zip
  (cd "$root/lib" && rm -f "$zip_file" && "$python" -m zipfile -c "$zip_file" driftline >/dev/null)
  app=$file
  ship=(--jars "$jars" --py-files "$zip_file")
  log4j=file:$root/conf/log4j2.properties
  if [[ $deploy_mode == cluster ]]; then
    # the driver runs on a cluster node: conf/ (platform.yaml, usecases/) goes along
    conf_zip=$build/driftline-conf.zip
    (cd "$root/conf" && rm -f "$conf_zip" && "$python" -m zipfile -c "$conf_zip" ./* >/dev/null)
    archives=${archives:+$archives,}$conf_zip#conf
    ship+=(--conf spark.yarn.appMasterEnv.DRIFTLINE_CONF_DIR=conf)
    log4j=conf/log4j2.properties
  fi
  [[ -z $archives ]] || ship+=(--archives "$archives")
fi

if [[ $master == local* ]]; then
  export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$python}
  export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
fi
# a driver running here runs in this Python (Spark's docs: not set in cluster mode)
if [[ $deploy_mode == client ]]; then export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$python}; fi
export DRIFTLINE_HOME=${DRIFTLINE_HOME:-$root}
export PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}"

exec "$submit" \
  --master "$master" \
  --deploy-mode "$deploy_mode" \
  "${ship[@]}" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --driver-java-options "-Dlog4j2.configurationFile=$log4j" \
  ${spark_conf[@]+"${spark_conf[@]}"} \
  "$app" "$@"
