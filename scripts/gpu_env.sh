# Sourced by the GPU scripts: makes the project's Python modules importable on a machine that may
# lack some of them. use_wheels WHEELS IMPORTS SUMMARY: when `import IMPORTS` fails, installs the
# wheels in the folder WHEELS into /tmp/attn_resnet_site and puts it on PYTHONPATH (a pip install
# with no index: the GPU machine has no package registry); without wheels it writes why to SUMMARY
# and exits 2. Then the checkout itself goes on PYTHONPATH.
use_wheels() {
    local wheels="$1" imports="$2" summary="$3"
    if ! python3 -c "import $imports" 2>/dev/null; then
        if compgen -G "$wheels/*.whl" >/dev/null; then
            python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/attn_resnet_site "$wheels"/*.whl
            export PYTHONPATH="/tmp/attn_resnet_site${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "$imports: not all importable, and no wheels were found in $wheels" | tee "$summary"
            exit 2
        fi
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
}
