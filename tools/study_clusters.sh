#!/usr/bin/env bash
# The c-BTM study of docs/results.md: the 8 train domains of tools/study.sh with their labels
# dropped, clustered into K = 4, 8 or 16 domains (btm cluster), one ELM per cluster, at the
# compute of tools/study.sh main: every model path 500 steps, the seed's and the dense's global
# batch 128 x 1024 tokens, so an ELM's is 128 / K sequences (K = 4: 32, K = 8: 16, K = 16: 8).
#   cK      (c4 c8 c16) cluster the labelled train documents (their train splits, back to text by
#           tools/corpus_to_text.py, so no labelled test document is trained on), prepare one
#           corpus per cluster, then the whole `btm run` in RUNS/cK, evaluated on the clusters'
#           own test splits (in-domain), on the 8 labelled domains' test splits and on the 2
#           held-out ones (the latter two as eval_domains); rows ensemble:cluster-top-k beside
#           the posterior ensemble; RUNS/cK/agreement.md: clusters against the labels
#   table   RUNS/clusters.md: the rows docs/results.md shows, beside main's labelled forest
# Needs tools/study.sh main first (its corpus; its eval.h5 for the table).
#   tools/study_clusters.sh [PIECE...]      (default: c4 c8 c16 table)
# Environment as tools/study.sh (BTM, CORPUS, BPE, RUNS, RANKS, OUT, ARGS), and
#   CTEXT  the train documents as text [data/full/train-text]
set -euo pipefail
cd "$(dirname "$0")/.."
BTM=${BTM:-build-cuda/btm}
CORPUS=${CORPUS:-data/full/corpus}
BPE=${BPE:-data/gpt2}
RUNS=${RUNS:-runs/study}
RANKS=${RANKS:-1}
CTEXT=${CTEXT:-data/full/train-text}
PYTHON=${PYTHON:-/usr/bin/python3}
TRAIN=religious,dictionary,c_code,kernel_docs,mathematics,package_descriptions,biology,python_docs
HELD=man_pages,computing_dictionary
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pieces=("$@")
((${#pieces[@]})) || pieces=(c4 c8 c16 table)

cluster() {
  local k=$1 dir=$RUNS/c$1 ccorpus=$RUNS/c$1/corpus
  [[ -x $BTM ]] || { echo "study_clusters: no btm at $BTM (build it, or set BTM)" >&2; exit 2; }
  [[ -f $CORPUS/man_pages.h5 ]] || { echo "study_clusters: no corpus at $CORPUS (tools/study.sh main prepares it)" >&2; exit 2; }
  mkdir -p "$dir"
  [[ -f $CTEXT/python_docs/train.jsonl ]] ||
    "$PYTHON" tools/corpus_to_text.py "$CORPUS" "$CTEXT" --domains "$TRAIN" --bpe-dir "$BPE"
  local start=$SECONDS
  {
    mpirun -np "$(nproc)" --oversubscribe "$BTM" cluster --input "$CTEXT" --out "$dir/clusters.h5" \
      --clusters "$k" --tokenizer gpt2 --bpe-dir "$BPE"
    mpirun -np "$(nproc)" --oversubscribe "$BTM" prepare --clusters "$dir/clusters.h5" \
      --input "$CTEXT" --out "$ccorpus" --tokenizer gpt2 --bpe-dir "$BPE"
    # The labelled corpora beside the clusters, as evaluation domains.
    for d in ${TRAIN//,/ } ${HELD//,/ }; do ln -sf "$(realpath "$CORPUS/$d.h5")" "$ccorpus/$d.h5"; done
  } 2>&1 | tee "$dir/cluster-log.txt"
  "$PYTHON" tools/cluster_agreement.py "$ccorpus" --out "$dir/agreement.md"
  local domains
  domains=$(seq -f "cluster_%02g" 0 $((k - 1)) | paste -sd,)
  local batch=$((128 / k)) accum=1
  if ((batch > 16)); then accum=$((batch / 16)); batch=16; fi
  # No dense model of its own: the baseline is main's (the same compute, on the labelled mixture).
  mpirun -np "$RANKS" --bind-to none "$BTM" run --config inputs/btm-125m.cfg --config inputs/study-124m.cfg \
    --data.corpus "$ccorpus" --data.domains "$domains" --data.eval_domains "$TRAIN,$HELD" \
    --data.clusters "$dir/clusters.h5" --data.batch $batch --data.accum $accum --run.dense false \
    --run.dir "$dir" ${ARGS:-} 2>&1 | tee "$dir/log.txt"
  echo "[study] c$k: $((SECONDS - start)) s" | tee -a "$dir/log.txt"
  if [[ -n ${OUT:-} ]]; then
    tar czf "$OUT/c$k.tar.gz" -C "$RUNS" "c$k/eval.h5" "c$k/forest.h5" "c$k/metrics" \
      "c$k/log.txt" "c$k/cluster-log.txt" "c$k/agreement.md"
  fi
}

table() {
  local m=$RUNS/main/eval.h5 rows=()
  rows+=("dense|$m|dense|the baseline (labelled study)")
  rows+=("labelled forest, top-1 (cached prior)|$m|ensemble:top-1|")
  rows+=("labelled forest, all 8 (cached prior)|$m|ensemble:top-8|")
  for k in 4 8 16; do
    local e=$RUNS/c$k/eval.h5
    [[ -f $e ]] || continue
    rows+=("c-BTM K=$k, cluster routing top-1|$e|ensemble:cluster-top-1|")
    rows+=("c-BTM K=$k, cluster routing all $k|$e|ensemble:cluster-top-$k|")
    rows+=("c-BTM K=$k, posterior top-1 (cached prior)|$e|ensemble:top-1|")
    rows+=("c-BTM K=$k, posterior all $k|$e|ensemble:top-$k|")
  done
  "$PYTHON" tools/report.py --merge "$RUNS/clusters.md" "${rows[@]}"
}

for piece in "${pieces[@]}"; do
  case $piece in
    c4) cluster 4 ;;
    c8) cluster 8 ;;
    c16) cluster 16 ;;
    table) table ;;
    *) echo "study_clusters: unknown piece '$piece' (c4 c8 c16 table)" >&2; exit 2 ;;
  esac
done
