#!/bin/sh
# vkpt run on the bundled stories260K reproduces llama2.c's run.c output byte
# for byte (models/stories260K/expected-greedy.txt: the command line, then
# its exact stdout). run.c's -n 200 counts positions including the prompt's
# 4 tokens after BOS; vkpt run's -n counts generated tokens: 196.
# usage: cli_run_stories.sh VKPT SOURCE_DIR
set -eu
vkpt=$1
dir=$2/models/stories260K
want=$(mktemp)
got=$(mktemp)
trap 'rm -f "$want" "$got"' EXIT
# the first record: line 2 up to the blank line before the second command
awk 'NR == 1 { next } /^$/ { exit } { print }' "$dir/expected-greedy.txt" >"$want"
"$vkpt" run -m "$dir/stories260K.gguf" -p "Once upon a time" -n 196 --temp 0 >"$got" 2>/dev/null
if ! cmp -s "$want" "$got"; then
    echo "vkpt run output differs from llama2.c's:"
    diff "$want" "$got" | head -20
    exit 1
fi
# the second record: no prompt; all 200 of run.c's steps are generated tokens
awk 'f && NR > s { print } /^$/ && !f { f = 1; s = NR + 1 }' "$dir/expected-greedy.txt" >"$want"
"$vkpt" run -m "$dir/stories260K.gguf" -n 200 --temp 0 >"$got" 2>/dev/null
if ! cmp -s "$want" "$got"; then
    echo "vkpt run (no prompt) differs from llama2.c's:"
    diff "$want" "$got" | head -20
    exit 1
fi
echo "ok: vkpt run matches llama2.c byte for byte (both records)"
