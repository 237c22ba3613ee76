// Helpers shared by the passes that run convolutions as kiln::FusedMatMul (conv1x1_as_gemm,
// conv_patchify_as_gemm): attribute checks and the activations the GEMM epilogue cannot apply.
#pragma once

#include <string>

#include "ir/graph.h"
#include "ops/layout_util.h"

namespace kiln::passes::conv_gemm {

// Attribute `name` (default: n copies of `want`) has every element equal to `want`.
bool all_equal(const Attributes& a, const char* name, int64_t want, size_t n);
bool group_is_one(const Attributes& a);
// The FusedMatMul activation attribute for a convolution epilogue's activation; null when its epilogue has none.
// SiLU and sigmoid only with sigmoid_forms (PassOptions::matmul_sigmoid_acts).
const char* gemm_epilogue(ops::Activation a, bool sigmoid_forms = false);
// Adds the ONNX nodes of a FusedConv activation after `t` (same type and shape); returns the last value. They run
// as one fused pointwise kernel later (fuse_pointwise follows these passes).
ir::Value* emit_activation(ir::Graph& g, ir::Value* t, const ops::Epilogue& e, const std::string& base);
// Removes `node` and its output `old`, whose readers read `v` instead; with keep_name, `v` takes old's name, so
// readers and network outputs see no change.
void take_over(ir::Graph& g, ir::Node* node, ir::Value* old, ir::Value* v, bool keep_name = true);

}  // namespace kiln::passes::conv_gemm
