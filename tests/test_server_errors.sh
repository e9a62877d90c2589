#!/usr/bin/env bash
# Error cases of `vkpt serve`, driven with curl (and raw bytes through bash's
# /dev/tcp): every bad input gets its 4xx status and an OpenAI-shaped JSON
# error, and the server answers the next request. Also /health, /metrics and
# a streamed answer, as the README shows them.
#
#   tests/test_server_errors.sh build/tools/vkpt
set -u
trap '' PIPE # writing to a connection the server closed is not fatal here
vkpt=${1:?usage: $0 path/to/vkpt}
work=$(mktemp -d)
log=$work/serve.log
fails=0

"$vkpt" serve --host 127.0.0.1 --port 0 --max-body 64K --header-timeout 1 --body-timeout 1 \
    --ctx 256 >"$log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log")
    [ -n "$url" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "vkpt serve exited early:"; cat "$log"; exit 1
    fi
    sleep 0.1
done
[ -n "${url:-}" ] || { echo "vkpt serve did not start"; cat "$log"; exit 1; }
port=${url##*:}

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# The server must still answer a good request.
still_serving() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/completions" \
        -H 'Content-Type: application/json' -d '{"prompt":"Once","max_tokens":1}')
    [ "$code" = 200 ] || fail "after '$1': the next request got $code"
}

# expect NAME STATUS CODE-or-"" CURL-ARGS... : the status, the error shape,
# error.code when given, then a good request.
expect() {
    local name=$1 status=$2 code=$3
    shift 3
    local got
    got=$(curl -s -o "$work/body" -w '%{http_code}' "$@")
    if [ "$got" != "$status" ]; then
        fail "$name: status $got, want $status: $(head -c 300 "$work/body")"
    elif ! grep -q '^{"error":{"message":"[^"]\{10,\}' "$work/body" ||
        ! grep -q '"type":"[a-z_]*","param":' "$work/body" ||
        ! grep -q ',"code":' "$work/body"; then
        fail "$name: not an OpenAI error object: $(head -c 300 "$work/body")"
    elif [ -n "$code" ] && ! grep -q "\"code\":\"$code\"" "$work/body"; then
        fail "$name: want code $code: $(head -c 300 "$work/body")"
    else
        echo "ok: $name -> $got $(sed 's/.*"message":"\([^"]*\)".*/\1/' "$work/body" | head -c 100)"
    fi
    still_serving "$name"
}

chat=(-H 'Content-Type: application/json' "$url/v1/chat/completions")
comp=(-H 'Content-Type: application/json' "$url/v1/completions")
msgs='"messages":[{"role":"user","content":"Once upon a time"}]'

expect "malformed JSON" 400 invalid_json "${chat[@]}" -d '{"messages": [}'
expect "body not an object" 400 invalid_json "${chat[@]}" -d '[1,2]'
expect "empty body" 400 invalid_json "${chat[@]}" -d ''
expect "wrong type" 400 invalid_type "${chat[@]}" -d "{$msgs,\"temperature\":\"hot\"}"
expect "messages not an array" 400 invalid_type "${chat[@]}" -d '{"messages":"hi"}'
expect "temperature < 0" 400 invalid_value "${chat[@]}" -d "{$msgs,\"temperature\":-0.5}"
expect "n > 5" 400 invalid_value "${chat[@]}" -d "{$msgs,\"n\":6}"
expect "top_logprobs > 20" 400 invalid_value "${chat[@]}" -d "{$msgs,\"logprobs\":true,\"top_logprobs\":21}"
expect "max_tokens < 1" 400 invalid_value "${chat[@]}" -d "{$msgs,\"max_tokens\":0}"
expect "completions logprobs > 20" 400 invalid_value "${comp[@]}" -d '{"prompt":"x","logprobs":21}'
expect "unknown field" 400 unknown_parameter "${chat[@]}" -d "{$msgs,\"temprature\":1}"
expect "missing messages" 400 missing_required_parameter "${chat[@]}" -d '{"model":"stories260K"}'
expect "unknown model" 404 model_not_found "${chat[@]}" -d "{$msgs,\"model\":\"gpt-9\"}"
long=$(printf 'Once upon a time there was a dog. %.0s' $(seq 1 80))
expect "prompt over context" 400 context_length_exceeded "${comp[@]}" -d "{\"prompt\":\"$long\"}"
expect "prompt + max_tokens over context" 400 context_length_exceeded "${comp[@]}" \
    -d '{"prompt":"Once","max_tokens":300}'
head -c 70000 /dev/zero | tr '\0' 'a' >"$work/big"
expect "body too large" 413 request_too_large "${comp[@]}" --data-binary "@$work/big"
expect "chunked body too large" 413 request_too_large "${comp[@]}" -H 'Transfer-Encoding: chunked' \
    --data-binary "@$work/big"
expect "unknown route" 404 not_found "$url/v1/audio/speech"
expect "wrong method" 405 method_not_allowed -X DELETE "$url/v1/models"
expect "token id outside the vocabulary" 400 invalid_value "${comp[@]}" -d '{"prompt":[1,99999]}'

# Raw HTTP: malformed request line, and headers that never finish (408).
raw() {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%b' "$1" >&3
    sleep "${2:-0}"
    timeout 5 cat <&3 >"$work/raw"
    exec 3<&-
}
raw 'GARBAGE / HTTP/9.9\r\nfoo\r\n\r\n'
if head -1 "$work/raw" | grep -q '^HTTP/1.1 400' && grep -q '"error":{"message"' "$work/raw"; then
    echo "ok: malformed HTTP -> 400"
else
    fail "malformed HTTP: $(head -c 200 "$work/raw")"
fi
still_serving "malformed HTTP"
raw 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le' 2
if head -1 "$work/raw" | grep -q '^HTTP/1.1 408' && grep -q '"code":"request_timeout"' "$work/raw"; then
    echo "ok: headers too slow -> 408"
else
    fail "header timeout: $(head -c 200 "$work/raw")"
fi
still_serving "header timeout"
raw 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt":' 2
if head -1 "$work/raw" | grep -q '^HTTP/1.1 408'; then
    echo "ok: body too slow -> 408"
else
    fail "body timeout: $(head -c 200 "$work/raw")"
fi
still_serving "body timeout"
# Two pipelined requests on one connection: both answered, in order.
raw 'GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
if [ "$(grep -o 'HTTP/1.1 200' "$work/raw" | wc -l)" = 2 ] && grep -q '"object":"list"' "$work/raw"; then
    echo "ok: pipelined requests"
else
    fail "pipelining: $(head -c 400 "$work/raw")"
fi

# Expect: 100-continue is honoured.
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' "${comp[@]}" \
    -d '{"prompt":"Once upon a time","max_tokens":2}')
[ "$code" = 200 ] && echo "ok: Expect: 100-continue" || fail "Expect: 100-continue got $code"

# The operational routes and a streamed answer.
[ "$(curl -s "$url/health")" = '{"status":"ok"}' ] && echo "ok: /health" || fail "/health"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ready")" = 200 ] && echo "ok: /ready" || fail "/ready"
curl -s "$url/metrics" >"$work/metrics"
for m in vkpt_http_requests_total vkpt_prompt_tokens_total vkpt_generation_tokens_total \
    vkpt_time_to_first_token_seconds_bucket vkpt_time_per_output_token_seconds_bucket \
    vkpt_queue_depth vkpt_running_sequences vkpt_kv_blocks_used vkpt_kv_blocks_free \
    vkpt_prefix_cache_hits_total vkpt_device_memory_used_bytes; do
    grep -q "^$m" "$work/metrics" || fail "/metrics lacks $m"
done
grep -q '^vkpt_http_requests_total{route="/v1/chat/completions",status="400"} [1-9]' "$work/metrics" &&
    echo "ok: /metrics counts the errors" || fail "/metrics: no 400s counted"
curl -sN "${comp[@]}" -d '{"prompt":"Once upon a time","max_tokens":8,"stream":true}' >"$work/sse"
if [ "$(tail -c 14 "$work/sse" | tr '\n' '|')" = 'data: [DONE]||' ] && grep -q '"object":"text_completion"' "$work/sse"; then
    echo "ok: streaming ends with data: [DONE]"
else
    fail "streaming: $(tail -c 200 "$work/sse")"
fi

kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" = 0 ] && echo "ok: SIGTERM -> exit 0" || fail "exit status $rc after SIGTERM"
trap - EXIT
rm -rf "$work"
if [ "$fails" != 0 ]; then
    echo "$fails failures"
    exit 1
fi
echo "all server error cases passed"
