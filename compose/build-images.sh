#!/usr/bin/env bash
# Builds the compose cluster's images locally (no registry). The work is done
# in Rust by `cargo xtask images` (xtask/src/images/); this only calls it, with
# the arguments passed through: --tag T, --only ephemera,python,collector,
# --help for the rest. See compose/README.md ("Images").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo xtask images "$@"
