# The two commands of the README: `make serve` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test bench contexts clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

tests/interop/node_modules/.package-lock.json: tests/interop/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --silent --no-audit --no-fund --prefix tests/interop; \
	 else echo "npm not found: the JavaScript interop tests will be skipped"; fi

# The Traditional Chinese font the PDF parchments embed (scripts/fetch_fonts.py says where it comes from).
fonts/NotoSansTC-Regular.ttf: scripts/fetch_fonts.py | $(VENV)/.installed
	$(BIN)/python scripts/fetch_fonts.py

# A development instance: `issuer init` makes plaintext keys, which only a development instance may use
# (in production set ISSUER_KEY_PASSPHRASE and leave ISSUER_DEVELOPMENT unset; docs/keys.md).
serve: $(VENV)/.installed fonts/NotoSansTC-Regular.ttf
	$(BIN)/issuer init
	ISSUER_DEVELOPMENT=$${ISSUER_DEVELOPMENT:-1} $(BIN)/issuer serve

test: $(VENV)/.installed fonts/NotoSansTC-Regular.ttf tests/interop/node_modules/.package-lock.json
	@sh scripts/install_browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

contexts: $(VENV)/.installed
	$(BIN)/python scripts/fetch_contexts.py

clean:
	rm -rf $(VENV) tests/interop/node_modules fonts/*.ttf
