#!/usr/bin/env bash
# Build the embedded catalog's Gemma-3-270M entries from SIB-200 train (resumable:
# rerun after an interruption; finished languages are skipped, a running one resumes
# from its checkpoint). paper-12 first, then every FLORES-200 language.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SIB200:-../shared/data/sib200}
COMMON=(--model gemma-3-270m --corpus "$DATA" --split train --max-tokens 16384
        --seq-len 512 --batch-size 4 --checkpoint-every 8 --catalog catalog)
lape-hub build --refset paper-12 "${COMMON[@]}" "$@"
lape-hub build --refset flores-200 "${COMMON[@]}" "$@"
