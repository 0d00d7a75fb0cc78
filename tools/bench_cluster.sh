#!/usr/bin/env bash
# The speed of c-BTM in btm (docs/performance.md "c-BTM"), on CPU:
#   1. btm cluster on SAMPLE_MB of text per rank (GPT-2 ids): reading + tokenizing the sample,
#      then TF-IDF, the randomised SVD to 100 dimensions and balanced k-means (K clusters);
#   2. btm prepare --clusters: assigning every document to its nearest centre (embedding + K
#      distances), in MB/s per rank, beside the tokenizing it comes with;
#   3. routing: a small forest trained on the clusters (inputs/tiny.cfg's model, STEPS steps),
#      then btm eval: the prefix embeddings updated per token and the weights of every test
#      position, in tokens/s, and routing's share of the evaluation.
#   tools/bench_cluster.sh [TEXT]       (TEXT: a directory of .txt / .jsonl / .jsonl.gz files,
#                                        folders below it read too; default data/full/text)
# Environment: BTM [build/btm], RANKS [2], K [4], SAMPLE_MB [20], STEPS [20], BPE [data/gpt2],
#   WORK (kept when set; default a temporary directory, removed).
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:-data/full/text}
BTM=${BTM:-build/btm} RANKS=${RANKS:-2} K=${K:-4} SAMPLE_MB=${SAMPLE_MB:-20} STEPS=${STEPS:-20}
BPE=${BPE:-data/gpt2}
[[ -x $BTM ]] || { echo "bench_cluster: no btm at $BTM (build it, or set BTM)" >&2; exit 2; }
[[ -d $text ]] || { echo "bench_cluster: no text at $text (tools/build_corpus.py --out DIR)" >&2; exit 2; }
if [[ -n ${WORK:-} ]]; then work=$WORK; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi="mpirun -np $RANKS --oversubscribe"

echo "== 1. fit: $SAMPLE_MB MB per rank, $RANKS ranks, K = $K"
/usr/bin/time -f "fit wall %e s, peak RSS %M kB (one rank)" \
  $mpi "$BTM" cluster --input "$text" --out "$work/clusters.h5" --clusters "$K" \
  --sample-mb "$SAMPLE_MB" --tokenizer gpt2 --bpe-dir "$BPE" 2>&1

echo "== 2. assignment: btm prepare --clusters, $RANKS ranks"
$mpi "$BTM" prepare --clusters "$work/clusters.h5" --input "$text" --out "$work/corpus" \
  --tokenizer gpt2 --bpe-dir "$BPE" 2>&1 | grep -E "tokenizing at|done"

echo "== 3. routing: btm eval of a $K-ELM forest (inputs/tiny.cfg's model, $STEPS steps)"
domains=$(seq -f "cluster_%02g" 0 $((K - 1)) | paste -sd,)
$mpi "$BTM" run --config inputs/tiny.cfg --data.corpus "$work/corpus" --data.domains "$domains" \
  --data.eval_domains "" --data.clusters "$work/clusters.h5" --run.steps "$STEPS" \
  --run.dir "$work/run" --run.dense false --run.device cpu --eval.blocks 16 2>&1 |
  grep -E "^\[eval\] (cluster routing|wrote)|ensemble:(cluster-)?top-1 "
