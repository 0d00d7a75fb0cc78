#!/usr/bin/env bash
# The study of docs/results.md: BTM against its compute-matched dense baseline on one GPU, with
# the paper's ablations. Every piece is a whole `btm run` (train and evaluate) of its own:
#   main      the forest (8 ELMs from a seed of 50% of the steps) and the dense baseline
#   random    ELMs on a random split of the same documents instead of domains (run.split random)
#   share03   the seed 30% of the steps, the ELMs the rest
#   share07   the seed 70% of the steps
#   own-init  ELMs from their own random initialisations, no seed (run.elm_init random): the
#             check that averaging needs a shared seed
#   table     RUNS/study.md: one table of the rows docs/results.md shows (tools/report.py --merge)
#   merges    btm eval of main again with the task-vector merges (eval.merges: task arithmetic,
#             TIES, DARE, DARE-TIES), then RUNS/merges.md: the merges beside dense, the ensemble
#             and the averages (needs main's checkpoints)
# Every piece has the same total compute: each model path 500 steps, the seed's and the dense's
# global batch 8 times an ELM's (inputs/study-124m.cfg). The dense baseline is the same model for
# every piece (it is the seed's trajectory to the end), so only `main` trains it.
#   tools/study.sh [PIECE...]          (default: main random share03 share07 own-init table)
# Environment (defaults in brackets):
#   BTM     the btm executable [build-cuda/btm]
#   CORPUS  tokenized corpora [data/full/corpus]; made from TEXT with btm prepare when missing
#   TEXT    tools/build_corpus.py's output [data/full/text]   BPE  GPT-2 BPE files [data/gpt2]
#   RUNS    run directories [runs/study]; each piece writes about 14 GB of checkpoints
#   RANKS   ranks (GPUs) [1]   OUT  where each piece's small files go as PIECE.tar.gz [none]
#   ARGS    more btm flags for every run, e.g. a smaller model to try the script out [none]
set -euo pipefail
cd "$(dirname "$0")/.."
BTM=${BTM:-build-cuda/btm}
CORPUS=${CORPUS:-data/full/corpus}
TEXT=${TEXT:-data/full/text}
BPE=${BPE:-data/gpt2}
RUNS=${RUNS:-runs/study}
RANKS=${RANKS:-1}
PYTHON=${PYTHON:-/usr/bin/python3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# btm runs with --bind-to none: Open MPI binds one or two ranks to a core each, and the CPU work
# (merges, checkpoint files, combination) wants every core.
[[ -x $BTM ]] || { echo "study: no btm at $BTM (build it, or set BTM)" >&2; exit 2; }
pieces=("$@")
((${#pieces[@]})) || pieces=(main random share03 share07 own-init table)

prepare() {
  [[ -f $CORPUS/man_pages.h5 ]] && return
  [[ -d $TEXT ]] || { echo "study: no corpus at $CORPUS and no text at $TEXT (tools/build_corpus.py --out $TEXT)" >&2; exit 2; }
  mpirun -np "$(nproc)" --oversubscribe "$BTM" prepare --input "$TEXT" --out "$CORPUS" \
    --tokenizer gpt2 --bpe-dir "$BPE"
}

# run PIECE FLAGS...: the whole pipeline in RUNS/PIECE, its log beside it, its small files to OUT.
run() {
  local piece=$1 dir=$RUNS/$1
  shift
  mkdir -p "$dir"
  local start=$SECONDS
  mpirun -np "$RANKS" --bind-to none "$BTM" run --config inputs/btm-125m.cfg --config inputs/study-124m.cfg \
    --data.corpus "$CORPUS" --run.dir "$dir" ${ARGS:-} "$@" 2>&1 | tee "$dir/log.txt"
  echo "[study] $piece: $((SECONDS - start)) s" | tee -a "$dir/log.txt"
  if [[ -n ${OUT:-} ]]; then
    tar czf "$OUT/$piece.tar.gz" -C "$RUNS" "$piece/eval.h5" "$piece/forest.h5" "$piece/metrics" \
      "$piece/log.txt"
  fi
}

table() {
  local m=$RUNS/main/eval.h5 r=$RUNS/random/eval.h5 s3=$RUNS/share03/eval.h5
  local s7=$RUNS/share07/eval.h5 o=$RUNS/own-init/eval.h5
  "$PYTHON" tools/report.py --merge "$RUNS/study.md" \
    "dense|$m|dense|the baseline" \
    "forest, top-1 (cached prior)|$m|ensemble:top-1|better than dense, in and out of domain" \
    "forest, top-2|$m|ensemble:top-2|better than top-1" \
    "forest, all 8 (cached prior)|$m|ensemble:top-8|best of the ensembles" \
    "forest, uniform mixture|$m|ensemble:uniform-mixture|worse than the cached prior" \
    "average, uniform|$m|average:uniform|worse than the ensemble" \
    "average, cached prior|$m|average:cached-prior|below the ensemble, at one model's cost" \
    "random split, top-1|$r|ensemble:top-1|worse than the domain forest" \
    "random split, all 8|$r|ensemble:top-8|worse than the domain forest" \
    "seed share 0.3, top-1|$s3|ensemble:top-1|a seed phase is needed" \
    "seed share 0.3, average (cached prior)|$s3|average:cached-prior|" \
    "seed share 0.7, top-1|$s7|ensemble:top-1|" \
    "seed share 0.7, average (cached prior)|$s7|average:cached-prior|" \
    "own inits, top-1|$o|ensemble:top-1|" \
    "own inits, average (uniform)|$o|average:uniform|useless: averaging needs a shared seed" \
    "own inits, average (cached prior)|$o|average:cached-prior|useless: averaging needs a shared seed"
}

merges() {
  local dir=$RUNS/main m=$RUNS/main/eval.h5
  [[ -f $dir/forest.h5 ]] || { echo "study: no forest at $dir (run the main piece first)" >&2; exit 2; }
  local start=$SECONDS
  mpirun -np "$RANKS" --bind-to none "$BTM" eval --config inputs/btm-125m.cfg --config inputs/study-124m.cfg \
    --data.corpus "$CORPUS" --run.dir "$dir" \
    --eval.merges task-arithmetic,ties,dare,dare-ties ${ARGS:-} 2>&1 | tee "$dir/merges-log.txt"
  echo "[study] merges: $((SECONDS - start)) s" | tee -a "$dir/merges-log.txt"
  "$PYTHON" tools/report.py --merge "$RUNS/merges.md" \
    "dense|$m|dense|the baseline" \
    "forest, top-1 (cached prior)|$m|ensemble:top-1|k=1 experts' inference" \
    "forest, all 8 (cached prior)|$m|ensemble:top-8|8 experts' inference" \
    "average, uniform|$m|average:uniform|one model" \
    "average, cached prior|$m|average:cached-prior|one model per domain" \
    "task arithmetic, uniform|$m|merge:task-arithmetic:uniform|lambda 1: the uniform average" \
    "task arithmetic, cached prior|$m|merge:task-arithmetic:cached-prior|" \
    "TIES, uniform|$m|merge:ties:uniform|density 0.2" \
    "TIES, cached prior|$m|merge:ties:cached-prior|density 0.2" \
    "DARE, uniform|$m|merge:dare:uniform|drop 0.9" \
    "DARE, cached prior|$m|merge:dare:cached-prior|drop 0.9" \
    "DARE-TIES, uniform|$m|merge:dare-ties:uniform|drop 0.9" \
    "DARE-TIES, cached prior|$m|merge:dare-ties:cached-prior|drop 0.9"
  if [[ -n ${OUT:-} ]]; then
    tar czf "$OUT/merges.tar.gz" -C "$RUNS" main/eval.h5 main/merges-log.txt merges.md
  fi
}

for piece in "${pieces[@]}"; do
  case $piece in
    main) prepare; run main ;;
    random) prepare; run random --run.split random --run.dense false ;;
    share03) prepare; run share03 --run.seed_share 0.3 --run.dense false ;;
    share07) prepare; run share07 --run.seed_share 0.7 --run.dense false ;;
    own-init) prepare; run own-init --run.seed_share 0 --run.elm_init random --run.dense false ;;
    table) table ;;
    merges) merges ;;
    *) echo "study: unknown piece '$piece' (main random share03 share07 own-init table merges)" >&2; exit 2 ;;
  esac
done
