#!/usr/bin/env bash
# Build the embedded catalog's Gemma-3-270M entries from SIB-200 train (resumable:
# rerun after an interruption; finished languages are skipped, a running one resumes
# from its checkpoint). paper-12 first, then every FLORES-200 language.
# The shipped entries are float32 with BOS counted (corpus id sib200:train@16384): the
# counting rule is named here so that a machine where --dtype auto means bfloat16 (CUDA, a
# CPU with bf16 instructions) rebuilds the same identity instead of a new one.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SIB200:-../shared/data/sib200}
COMMON=(--model gemma-3-270m --corpus "$DATA" --split train --max-tokens 16384
        --dtype float32 --bos count
        --seq-len 512 --batch-size 4 --checkpoint-every 8 --catalog catalog)
lape-hub build --refset paper-12 "${COMMON[@]}" "$@"
lape-hub build --refset flores-200 "${COMMON[@]}" "$@"
