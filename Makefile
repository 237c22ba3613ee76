# Kiln top-level entry points: `make demo` and `make test` work from a fresh clone.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
PYTHON ?= /usr/bin/python3
APT_PACKAGES = build-essential cmake ninja-build pkg-config libprotobuf-dev protobuf-compiler libonnx-dev \
  libonnx-testdata libopenblas-dev nlohmann-json3-dev libcli11-dev libgtest-dev pybind11-dev python3-dev python3-numpy python3-pytest python3-onnx python3-venv \
  python3-torch python3-torchvision
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build cutlass test test-unit test-cli test-python test-node pypi-node-data test-models test-hf demo bench docs clean

all: build

# Installs only what is missing, so repeated runs cost nothing.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(BUILD_DIR)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON)

# The CUTLASS GEMM tactics (src/backends/cuda/cutlass_gemm.h) need NVIDIA CUTLASS's headers: this fetches them and
# reconfigures the build with them (about 45 s of compile per kernel; CI, without a GPU, does not build them).
# `make demo` does it by itself where a GPU is present.
cutlass:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON) \
	  -DKILN_CUTLASS_DIR=$$(PYTHON=$(PYTHON) tools/fetch_cutlass.sh $(CURDIR)/$(BUILD_DIR)/_deps/cutlass)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	$(MAKE) --no-print-directory test-unit test-cli test-python test-node test-models docs

test-unit:
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

test-cli:
	KILN_BUILD=$(BUILD_DIR) $(PYTHON) -m pytest -q tests/cli

# The Python package from the build tree (<build>/python); `pip install .` installs the same package.
test-python:
	KILN_BUILD=$(BUILD_DIR) $(PYTHON) -m pytest -q tests/python

# The newest onnx release from PyPI lives in its own virtual environment so Debian's python3-onnx (which matches
# the ONNX C++ library Kiln links) stays as it is; its node tests cover opsets the Debian test data does not.
PYPI_ENV = $(BUILD_DIR)/pyenv
PYPI_NODE_DATA = $(BUILD_DIR)/onnx-node-pypi

# The stamp is written only after pip succeeds, so an interrupted install is retried.
$(PYPI_ENV)/onnx.stamp:
	$(PYTHON) -m venv $(PYPI_ENV)
	$(PYPI_ENV)/bin/pip install -q --upgrade onnx
	touch $@

pypi-node-data: $(PYPI_ENV)/onnx.stamp
	$(PYPI_ENV)/bin/python tests/onnx/write_pypi_node_tests.py --out $(PYPI_NODE_DATA)

test-node: pypi-node-data
	$(PYTHON) tests/onnx/run_node_tests.py --kiln-build $(BUILD_DIR) --pypi-data $(PYPI_NODE_DATA) \
	  --results $(BUILD_DIR)/node_results.json
	# The suite through the CUDA pass list on the reference kernels: every test (test_cuda_passes_node_suite.cpp), and
	# the Attention and Einsum tests counted as lowered (test_lower_onnx_attention.cpp, test_lower_einsum.cpp).
	KILN_ONNX_NODE_DIR=$(PYPI_NODE_DATA)/node $(BUILD_DIR)/bin/kiln_tests \
	  --gtest_filter='CudaPassList.OnnxNodeTests:LowerOnnxAttention.OnnxNodeTests:LowerEinsum.OnnxNodeTests' --gtest_brief=1

test-models:
	$(PYTHON) tests/models/test_models.py --kiln-build $(BUILD_DIR) --ci
	# The exported CNNs through the CUDA pass list on the reference kernels (tests/unit/test_cnn_models.cpp).
	KILN_CNN_MODEL_DIRS=models/resnet50_op17:models/mobilenet_v2_op17:models/efficientnet_b0_op17 \
	  $(BUILD_DIR)/bin/kiln_tests --gtest_filter='CnnModels.*' --gtest_brief=1
	# Float16 bindings on every CI export: nothing converted at them in an FP16 build (tests/unit/test_io_types.cpp).
	KILN_CNN_MODEL_DIRS=models/resnet50_op17:models/mobilenet_v2_op17:models/efficientnet_b0_op17 \
	  KILN_TRANSFORMER_MODEL_DIRS=$$(ls -d models/bert_ci_op* models/gpt_ci_op* models/vit_ci_op* | paste -sd:) \
	  $(BUILD_DIR)/bin/kiln_tests --gtest_filter='IoTypes.Float16BindingsConvertNothingInAnFp16Build' --gtest_brief=1
	# The exported transformers' attention through the CUDA pass list (tests/unit/test_transformer_models.cpp).
	KILN_TRANSFORMER_MODEL_DIRS=$$(ls -d models/bert_ci_op* models/gpt_ci_op* models/vit_ci_op* | paste -sd:) \
	  $(BUILD_DIR)/bin/kiln_tests --gtest_filter='TransformerModels.*:FuseAddLayerNorm.ExportedTransformers:FuseLayerNormOutputCast.ExportedTransformers:FoldLayerNormIntoMatMul.TransformerExports' \
	  --gtest_brief=1
	# torch's GroupNorm export fused into one GroupNormalization (tests/unit/test_fuse_groupnorm.cpp).
	$(PYTHON) tests/models/export_groupnorm.py --out models/groupnorm_op17/model.onnx > /dev/null
	KILN_GROUPNORM_ONNX=models/groupnorm_op17/model.onnx $(BUILD_DIR)/bin/kiln_tests \
	  --gtest_filter='FuseGroupNorm.TorchExport' --gtest_brief=1
	# The exported ViT's patch embedding as a GEMM (tests/unit/test_conv_patchify_as_gemm.cpp).
	KILN_VIT_MODEL_DIRS=models/vit_ci_op17 $(BUILD_DIR)/bin/kiln_tests --gtest_filter='ConvPatchifyAsGemm.ExportedVit' \
	  --gtest_brief=1

# Tiny random-weight Hugging Face models (tests/models/export_hf.py: BERT, RoBERTa, DistilBERT, GPT-2, ViT, T5 encoder,
# Llama, ..., built from configs, nothing downloaded; the text families also with a dynamic sequence length, as
# decoders are exported) through the CUDA FP16 pass list on the reference kernels (tests/unit/test_hf_models.cpp). Not part of `make test`: it needs transformers, which Kiln does not. HF_PYTHONPATH
# names where it is installed; for Debian's torch 1.13 the newest that allows it is 4.47.1:
#   pip install --no-deps --target /work/pydeps transformers==4.47.1 'tokenizers>=0.21,<0.22' \
#     'huggingface-hub>=0.24,<0.27' 'safetensors<0.6' regex filelock tqdm fsspec
HF_PYTHONPATH ?=
HF_MODELS_DIR ?= models
test-hf:
	@PYTHONPATH=$(HF_PYTHONPATH)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -c "import transformers" 2>/dev/null || \
	  { echo "test-hf: transformers is not importable; set HF_PYTHONPATH (see the Makefile)"; exit 1; }
	dirs=$$(PYTHONPATH=$(HF_PYTHONPATH)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) tests/models/export_hf.py \
	  --out $(HF_MODELS_DIR) --keep-going --list-dirs) && \
	  dyn=$$(PYTHONPATH=$(HF_PYTHONPATH)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) tests/models/export_hf.py \
	  --out $(HF_MODELS_DIR) --keep-going --list-dirs --dynamic-seq) && \
	  KILN_HF_MODEL_DIRS=$$dirs:$$dyn $(BUILD_DIR)/bin/kiln_tests --gtest_filter='HfModels.*' --gtest_brief=1

docs:
	$(PYTHON) tools/gen_operator_docs.py --results $(BUILD_DIR)/node_results.json --out docs/operators.md --readme README.md

demo: build
	@if nvidia-smi -L >/dev/null 2>&1; then \
	  { $(MAKE) --no-print-directory cutlass && cmake --build $(BUILD_DIR) -j $(JOBS); } || \
	  echo "demo: the CUTLASS GEMM tactics were not built (no PyPI access for their headers?); cuBLASLt serves those layers"; \
	fi
	$(PYTHON) scripts/demo.py --kiln-build $(BUILD_DIR)

bench: build
	$(PYTHON) bench/cpu_resnet50.py --kiln-build $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
