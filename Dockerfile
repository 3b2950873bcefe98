# syntax=docker/dockerfile:1
# The driftline project image: one image for the Spark master and workers, the
# notebook server and the MLflow server of docker-compose.yml, and the driver and
# executor pods on Kubernetes (README: "Kubernetes and YARN").
#
# Built from the same pins as `make setup`:
#   - Python packages: exactly pyproject.toml's dependencies (pyspark provides Spark:
#     spark-submit, spark-class and its jars) plus the `stack` extra (notebook server,
#     the MLflow server's PostgreSQL driver and basic-auth app);
#   - JVM artefacts: bin/fetch-jars resolving every pom of conf/jvm/ (Delta and the Kafka
#     connector: spark-connectors.pom.xml; the broker; the S3A connector) with Maven in a
#     build stage, as `make setup` does, so the image never depends on what a developer's
#     .driftline/jars happens to hold (.dockerignore keeps .driftline/ out of the context).
# Nothing is installed when a container starts.
#
#   docker build -t driftline:0.1.0 .        (docker compose build does this)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
# Java 17 from Debian (as bin/ensure-system installs), OpenBLAS for Spark ML, tini as PID 1
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless libopenblas0-pthread tini procps \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java
ENV JAVA_HOME=/opt/java \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# --- Python packages: the pins of pyproject.toml, nothing else --------------------------
FROM base AS python
WORKDIR /opt/driftline
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["stack"]))' > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
# The Spark the image runs is pyspark's: fail the build if it is not the pinned version.
ARG SPARK_VERSION=4.2.0
RUN python -c "import pyspark, sys; v = pyspark.__version__; \
sys.exit(None if v == '${SPARK_VERSION}' else f'pyspark {v} is not SPARK_VERSION ${SPARK_VERSION}')"
ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark
RUN test -x "$SPARK_HOME/bin/spark-submit" && command -v spark-class

# --- JVM artefacts: the same poms and script as `make setup` ---------------------------
FROM python AS jars
RUN apt-get update \
 && apt-get install -y --no-install-recommends maven \
 && rm -rf /var/lib/apt/lists/*
COPY bin/fetch-jars bin/
COPY conf/jvm/ conf/jvm/
RUN --mount=type=cache,target=/root/.m2 \
    DRIFTLINE_JARS_DIR=/jars bin/fetch-jars "$(command -v python)"

# --- the project image ------------------------------------------------------------------
FROM python AS driftline
ARG UID=1000
RUN useradd --uid "${UID}" --create-home --shell /bin/bash driftline \
 && mkdir -p /data \
 && chown driftline /opt/driftline /data
COPY --from=jars --chown=driftline /jars /opt/driftline/.driftline/jars
COPY --chown=driftline . /opt/driftline
# the library and the `driftline` command; its dependencies are already there (above)
RUN pip install --no-deps /opt/driftline \
 && rm -rf /opt/driftline/build /opt/driftline/lib/*.egg-info
ENV DRIFTLINE_HOME=/opt/driftline
USER driftline
WORKDIR /opt/driftline
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/driftline/bin/container-entrypoint"]
CMD ["bash"]
