# Two commands work on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt pins torch to the CPU build for our machines; the package itself does not pin torch.
	$(BIN)/pip install -q -c constraints.txt -e ".[test,bench]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/diffusers-sde sample --steps 200 --batch-size 100 --out out/demo.png

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out
