# tools/gpu-env.sh: sourced on the GPU machine after tools/gpu-stage.sh's .carry arrived there:
# unpacks the staged shared libraries (once) and sets the environment btm runs in there.
#   source tools/gpu-env.sh
carry=$(cd "${CARRY:-.carry}" && pwd)
[[ -d $carry/lib ]] || tar xJf "$carry/lib.tar.xz" -C "$carry"
export LD_LIBRARY_PATH=$carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
