#!/usr/bin/env bash
# GPU discovery script for Spark's resource scheduling: prints the GPUs this node (or this
# container) can use, as the JSON of Spark's ResourceInformation, e.g.
#
#   {"name": "gpu", "addresses": ["0", "1"]}
#
# Spark runs it when an executor (YARN, Kubernetes) or a standalone Worker starts, as named
# by spark.executor.resource.gpu.discoveryScript or spark.worker.resource.gpu.discoveryScript.
# The addresses are nvidia-smi's GPU indexes; the project stage turns the one Spark assigns
# to a task into the torch device cuda:N (lib/faceatlas/spark_project.py), so do not set
# CUDA_VISIBLE_DEVICES on executors, which would renumber torch's devices.
#
# Without nvidia-smi, or when it finds no GPU, the list is empty and the exit status still 0,
# so Spark schedules no GPU task on this node. Anything there that *requires* GPUs refuses to
# start, as Spark checks the count found against the count asked for: a standalone Worker
# with spark.worker.resource.gpu.amount set, or an executor with
# spark.executor.resource.gpu.amount >= 1 ("Resource: gpu, with addresses:  is less than
# what the user requested"). Leave the GPU settings out for CPU-only nodes and stages.
#
# In a container, nvidia-smi sees only the GPUs given to that container (the Kubernetes
# device plugin, YARN's GPU isolation), which is what Spark expects. On a standalone node
# without isolation it sees all of the node's GPUs: give each Worker its share with
# spark.worker.resource.gpu.amount.
set -euo pipefail

addresses=()
if command -v nvidia-smi >/dev/null 2>&1; then
  # nvidia-smi exits non-zero (and prints a message) when the driver is missing or no GPU is
  # found: that is "no GPUs" here, not an error.
  listing=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null) || listing=""
  while IFS= read -r line; do
    line=${line//[[:space:]]/}
    # Anything that is not a plain index is a message, not a GPU.
    [[ $line =~ ^[0-9]+$ ]] && addresses+=("\"$line\"")
  done <<<"$listing"
fi

joined=""
if ((${#addresses[@]})); then
  joined=$(IFS=,; printf '%s' "${addresses[*]}")
  joined=${joined//,/, }
fi
printf '{"name": "gpu", "addresses": [%s]}\n' "$joined"
