# Every target installs what it needs into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# Test files run on this many pytest workers, each file on one (its module fixtures and stacks stay whole).
TEST_WORKERS ?= 2

.PHONY: install lint test demo bench chaos clean chromium

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The inbox tests (and the receiver benchmark) also run on PostgreSQL when the local server answers.
PG_ANSWERS = $(shell $(BIN)/python -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/test', connect_timeout=3).close()" 2>/dev/null && echo yes)
WITH_PG = $(if $(PG_ANSWERS),TEST_DATABASE_URL=$${TEST_DATABASE_URL:-$(PG_URL)},)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The UI test's browser: Debian's chromium, installed when missing and apt-get can (as root, as on CI);
# otherwise the test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
		|| echo "chromium is not installed and cannot be installed here: the UI test skips"; }

test: lint chromium
	@echo "$(if $(PG_ANSWERS),PostgreSQL answers: the inbox tests run on it too,PostgreSQL does not answer: the inbox tests run on SQLite only)"
	$(WITH_PG) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

demo: install
	$(BIN)/metriport-dev demo $(DEMO_ARGS)

bench: install
	$(WITH_PG) $(BIN)/python bench/run_all.py

# The chaos run: 500 patients, Metriport's faults on, the receiver, serve and Prefect server killed under it.
chaos: install
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .demo data .pytest_cache
