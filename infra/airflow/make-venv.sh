#!/usr/bin/env bash
# make-venv.sh: the virtual environment with Apache Airflow that loads and tests the faceatlas
# DAG (infra/airflow/faceatlas_dag.py), kept apart from the project's .venv.
#
#   infra/airflow/make-venv.sh [DIR]      (default DIR: .venv-airflow in the repository root)
#
# Creates DIR with Python 3.11 and installs infra/airflow/requirements.txt, a fully pinned set.
# Idempotent: DIR/.requirements.sha256 records what was installed (the requirements' hash and
# the Python version); when it matches, nothing is done. When it does not, DIR is rebuilt from
# scratch, so no package of an older set is left behind. The stamp is written last, so an
# interrupted install is redone on the next run.
#
# Environment: PYTHON (default python3.11), the interpreter the venv is made from;
# PIP_* settings (index, proxy, cache) are honoured by pip as usual.
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
repo=$(cd "$here/../.." && pwd)
requirements=$here/requirements.txt
# pip as it was when requirements.txt was resolved; the venv's bundled one may be older.
readonly PIP_VERSION=26.3
readonly PY_WANTED=3.11

die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 2
}

case ${1:-} in
  -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
esac
(($# <= 1)) || die "too many arguments (usage: $prog [DIR])"
dir=${1:-$repo/.venv-airflow}
[[ -n $dir ]] || die "DIR is empty"
[[ -f $requirements ]] || die "no $requirements"

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 ||
  die "$python not found: install Python $PY_WANTED or set PYTHON to one"
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $version == "$PY_WANTED" ]] ||
  die "$python is Python $version; requirements.txt is resolved for $PY_WANTED"

if command -v sha256sum >/dev/null 2>&1; then
  hash=$(sha256sum "$requirements" | cut -d' ' -f1)
else
  hash=$("$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$requirements")
fi
want="$hash python$version"
stamp=$dir/.requirements.sha256

if [[ -f $stamp && $(<"$stamp") == "$want" ]] && "$dir/bin/python" -c '' 2>/dev/null; then
  exit 0
fi

if [[ -e $dir ]]; then
  # Only ever remove what looks like a virtual environment.
  if [[ -f $dir/pyvenv.cfg ]]; then
    echo "$prog: $dir is out of date; rebuilding it"
    rm -rf -- "$dir"
  elif [[ -d $dir && -z $(ls -A -- "$dir") ]]; then
    rmdir -- "$dir"
  else
    die "$dir exists and is not a virtual environment: remove it or choose another DIR"
  fi
fi

echo "$prog: creating $dir (Airflow, about 650 MB; a couple of minutes the first time)"
start=$SECONDS
"$python" -m venv "$dir"
# -qq: errors only (a pip.conf's unreachable extra index would print a warning per package).
"$dir/bin/python" -m pip install -qq --disable-pip-version-check "pip==$PIP_VERSION"
# Every package is pinned; pip still checks that the pins agree with each other. Wheels are
# used where there are any (pyspark-client is published as a source archive only).
"$dir/bin/python" -m pip install -qq --disable-pip-version-check --prefer-binary \
  -r "$requirements"
"$dir/bin/python" -c 'import airflow, airflow.providers.apache.spark' ||
  die "Airflow does not import in $dir"
printf '%s\n' "$want" >"$stamp"
echo "$prog: $dir ready in $((SECONDS - start)) s"
