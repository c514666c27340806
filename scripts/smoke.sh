#!/usr/bin/env bash
# Check a deployed counter end to end: GET, POST and a CORS preflight against its URL.
#
# Usage: scripts/smoke.sh [--origin=https://your.site] [--page=/path] URL
#
#   --origin  the Origin a browser on your site sends [first entry of ALLOWED_ORIGINS]
#   --page    the page to read and count [/smoke-test, so real pages keep their counts;
#             with ALLOWED_PAGES set, give a page it allows]
#
# Prints the status and body of each request; exits non-zero if any status is not the expected
# one. Requests carry a browser-shaped User-Agent ending in visit-counter-smoke/1, so the POST
# is counted like a visit (the counter takes curl's own agent for a bot). Needs curl.
set -euo pipefail

ORIGIN=""
PAGE=/smoke-test
URL=""
TIMEOUT_SECONDS=20
# Shaped like a browser's, so the function counts the visit (curl's own agent is a bot to it)
# and the Datastore write is exercised; "visit-counter-smoke" marks these requests in the logs.
USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) visit-counter-smoke/1"
FAILURES=0

main() {
    parse_args "$@"
    command -v curl >/dev/null || die "curl is not installed; install it (apt-get install curl)"
    [[ -n $URL ]] || die "give the function's URL; see scripts/smoke.sh --help"
    if [[ -z $ORIGIN ]]; then
        ORIGIN=${ALLOWED_ORIGINS:-}
        ORIGIN=${ORIGIN%%,*}
        ORIGIN=${ORIGIN// /}
        [[ $ORIGIN != "*" ]] || ORIGIN=https://example.com
    fi
    [[ -n $ORIGIN ]] || die "give --origin=https://your.site (or set ALLOWED_ORIGINS)"
    ORIGIN=${ORIGIN%/}

    WORK_DIR=$(mktemp -d)
    trap 'rm -rf "$WORK_DIR"' EXIT
    local target
    target="${URL%/}/?page=$(encode "$PAGE")"

    local before=""
    if request GET 200 "$target"; then
        before=$(count_in "$WORK_DIR/body")
    fi
    if request POST 200 "$target" -H "Origin: $ORIGIN"; then
        expect_header "Access-Control-Allow-Origin" "$ORIGIN"
        local after
        after=$(count_in "$WORK_DIR/body")
        if ! grep -Eq '"counted":[[:space:]]*true' "$WORK_DIR/body"; then
            # With UNIQUE_WINDOW_SECONDS set, a second smoke run is a repeat visitor.
            printf '  (not counted: a repeat visitor within UNIQUE_WINDOW_SECONDS?)\n'
        elif [[ -z $before || -z $after ]] || ((after <= before)); then
            fail "POST counted the visit but answered count ${after:-none} after ${before:-none}"
        fi
    fi
    if request OPTIONS 204 "$target" -H "Origin: $ORIGIN" -H "Access-Control-Request-Method: POST"; then
        expect_header "Access-Control-Allow-Origin" "$ORIGIN"
    fi

    if ((FAILURES)); then
        die "$FAILURES check(s) failed against $URL"
    fi
    printf 'smoke: all checks passed against %s\n' "$URL"
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

parse_args() {
    while (($#)); do
        case $1 in
        --origin=*) ORIGIN=${1#--origin=} ;;
        --page=*) PAGE=${1#--page=} ;;
        -h | --help) usage && exit 0 ;;
        -*) die "unknown option $1; see scripts/smoke.sh --help" ;;
        *)
            [[ -z $URL ]] || die "give one URL, not '$URL' and '$1'"
            URL=$1
            ;;
        esac
        shift
    done
}

# Send one request and print "METHOD status body"; fail (count it, return 1) unless status is $2.
request() {
    local method=$1 expected=$2 target=$3
    shift 3
    local status
    rm -f "$WORK_DIR/body" "$WORK_DIR/headers"
    status=$(curl --silent --show-error --max-time "$TIMEOUT_SECONDS" --request "$method" \
        --user-agent "$USER_AGENT" \
        --output "$WORK_DIR/body" --dump-header "$WORK_DIR/headers" --write-out '%{http_code}' \
        "$@" "$target" 2>"$WORK_DIR/curl-error") || true
    local body
    body=$(head -c 300 "$WORK_DIR/body" 2>/dev/null || true)
    printf '%-7s %s %s\n' "$method" "${status:-000}" "${body:-$(cat "$WORK_DIR/curl-error")}"
    if [[ $status != "$expected" ]]; then
        fail "$method answered ${status:-000}, expected $expected"
        if [[ $status == 404 && $method != OPTIONS ]]; then
            printf '  (with ALLOWED_PAGES set, pass --page= a page it allows)\n'
        fi
        return 1
    fi
}

expect_header() {
    local name=$1 expected=$2 actual
    actual=$(tr -d '\r' <"$WORK_DIR/headers" | awk -v name="$name" -F': ' \
        'tolower($1) == tolower(name) { print $2 }')
    [[ $actual == "$expected" ]] || fail "$name is '$actual', expected '$expected'"
}

count_in() {
    sed -n 's/.*"count":[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$1"
}

# Percent-encode a page for the query string; "/" may stay as it is.
encode() {
    local LC_ALL=C # one byte at a time, so UTF-8 comes out as its bytes
    local text=$1 out="" char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
        [A-Za-z0-9/._~-]) out+=$char ;;
        *) out+=$(printf '%%%02X' "'$char") ;;
        esac
    done
    printf '%s' "$out"
}

fail() {
    printf '  FAILED: %s\n' "$*"
    FAILURES=$((FAILURES + 1))
}

die() {
    printf 'smoke.sh: %s\n' "$*" >&2
    exit 1
}

main "$@"
