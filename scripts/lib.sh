# Shared by scripts/run and scripts/test (sourced, not executed): timed steps and the project venv.

# step "what" command...: run one step and print how long it took (CI logs show where the time goes).
step() {
    local what=$1 began
    shift
    began=$(date +%s%N)
    echo "==> $what" >&2
    "$@"
    echo "==> $what: $(( ($(date +%s%N) - began) / 1000000 )) ms" >&2
}

# ensure_venv SPEC: create .venv with Python 3.11+ if missing, then install SPEC pinned by constraints.txt.
ensure_venv() {
    if [[ ! -x .venv/bin/python ]]; then
        local python=${PYTHON:-python3}
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$0: $python is not Python 3.11+; set PYTHON=/path/to/python3.11" >&2
            exit 1
        fi
        step "create .venv" "$python" -m venv .venv
    fi
    step "pip install" .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e "$1"
}
