# Two entry points (README): `make demo` sets up the runtime and tags a demo library; `make test` sets up the
# development environment (exporter, torch CPU build, test tools) and runs the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= /tmp/tagger-demo
DEMO_CLIP := Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg

.PHONY: demo test setup setup-dev

$(VENV)/.runtime: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime pyproject.toml
	$(PY) -m pip install -q -e ".[dev]"
	# A machine with an NVIDIA driver gets onnxruntime's GPU build instead of the CPU one (they share a module).
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y onnxruntime && \
		$(PY) -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.18"; fi
	$(PY) -m exporter fetch
	touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

# A fresh copy of the two bundled CC clips every time, with its own database: rerunning never nests folders
# or mixes with your real library.
demo: setup
	rm -rf "$(DEMO)" && mkdir -p "$(DEMO)/library"
	cp exporter/data/*.ogg "$(DEMO)/library/"
	$(VENV)/bin/tagger scan "$(DEMO)/library" --database "$(DEMO)/db"
	$(VENV)/bin/tagger analyze "$(DEMO)/library/$(DEMO_CLIP)" --top 3

# Large buffers (model arenas, decoded audio) are mapped and unmapped rather than kept in the heap after use,
# so one pytest process running every model stays under 2 GB.
test: setup-dev
	$(PY) -m mypy
	MALLOC_MMAP_THRESHOLD_=1048576 $(PY) -m pytest -q $(ARGS)
