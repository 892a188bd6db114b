# Paths every script shares (sourced): the project venv and the folder of downloaded build inputs.
# TITAN_VENV may name another venv holding torch (the GPU machine's /opt/torch/.venv).
TITAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TITAN_VENV="${TITAN_VENV:-$TITAN_ROOT/.venv}"
TITAN_PYTHON="$TITAN_VENV/bin/python"
TITAN_DEPS="${TITAN_DEPS:-$TITAN_ROOT/.deps}"  # gloo headers (and on the GPU machine, .deb files)
export TITAN_VENV TITAN_PYTHON TITAN_DEPS
