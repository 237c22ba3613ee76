// Helpers for engine tests: small hand-built graphs and a byte-level view of an engine file's header.
#pragma once

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "builder/engine_writer.h"
#include "common/engine_format.h"
#include "ir/graph.h"
#include "kiln/runtime.h"

namespace kiln::test {

inline ir::Value* add_input(ir::Graph& g, const std::string& name, DataType dt, ops::Shape shape) {
  ir::Value* v = g.add_value(name);
  v->dtype = dt;
  v->shape = std::move(shape);
  v->rank_known = true;
  g.inputs().push_back(v);
  return v;
}

inline ir::Node* add_node(ir::Graph& g, const std::string& op, const std::string& name, std::vector<ir::Value*> in,
                          std::vector<std::string> outs, DataType dt, ops::Shape shape, Attributes attrs = {}) {
  ir::Node* n = g.add_node(op, name, in, outs, std::move(attrs));
  for (ir::Value* v : n->outputs) {
    v->dtype = dt;
    v->shape = shape;
    v->rank_known = true;
  }
  return n;
}

// x[N,4] float -> Identity -> Dropout(ratio) -> y (plus its bool mask as output 'mask');
// const w[2,3] -> Identity -> w_out; const b[3] int8 -> Identity -> b_out.
inline std::unique_ptr<ir::Graph> make_test_graph() {
  auto g = std::make_unique<ir::Graph>();
  g->name = "test_graph";
  ops::Shape xs = {ops::Dim::symbol("N"), ops::Dim(4)};
  ir::Value* x = add_input(*g, "x", DataType::kFLOAT, xs);
  ir::Node* id = add_node(*g, "Identity", "identity_node_marker", {x}, {"t"}, DataType::kFLOAT, xs);
  Attributes da;
  da.set("ratio", Attribute(0.25f));
  ir::Node* dr = add_node(*g, "Dropout", "dropout", {id->outputs[0]}, {"y", "mask"}, DataType::kFLOAT, xs, da);
  dr->outputs[1]->dtype = DataType::kBOOL;
  ir::Value* w = g->add_constant("weight_marker", Tensor::from_vector<float>({2, 3}, {1.5f, -2, 3, 4, 5, 6.25f}));
  ir::Node* wi = add_node(*g, "Identity", "wid", {w}, {"w_out"}, DataType::kFLOAT, {2, 3});
  ir::Value* b = g->add_constant("b", Tensor::from_vector<int8_t>({3}, {7, -8, 9}));
  ir::Node* bi = add_node(*g, "Identity", "bid", {b}, {"b_out"}, DataType::kINT8, {3});
  g->outputs() = {dr->outputs[0], dr->outputs[1], wi->outputs[0], bi->outputs[0]};
  return g;
}

// Decodes an engine, lets `edit` change its records (not the number of values) and encodes it again.
inline std::vector<uint8_t> reencode(const std::vector<uint8_t>& b,
                                     const std::function<void(engine_format::EngineFile&)>& edit) {
  auto f = engine_format::decode(b.data(), b.size());
  if (!f.ok()) return {};
  std::vector<Tensor> data(f->values.size());
  std::vector<const Tensor*> ptrs(f->values.size(), nullptr);
  for (size_t i = 0; i < f->values.size(); ++i) {
    auto& v = f->values[i];
    if (!v.is_constant) continue;
    data[i] = Tensor::wrap(v.dtype, ops::static_dims(v.shape),
                           const_cast<uint8_t*>(b.data() + f->weights_offset + v.weight_offset));
    ptrs[i] = &data[i];
  }
  edit(*f);
  auto r = engine_format::encode(std::move(*f), ptrs);
  return r.ok() ? std::move(r).value() : std::vector<uint8_t>{};
}

// The test graph's engine with the profile x: min [1,4], opt [8,4], max [32,4]. (The profile is added at
// the format level because OptimizationProfile::set_shape belongs to the builder library.)
inline std::vector<uint8_t> build_test_engine() {
  auto g = make_test_graph();
  auto r = builder::write_engine(*g, BuilderConfig());
  if (!r.ok()) return {};
  return reencode(r.value(), [](engine_format::EngineFile& f) {
    f.profiles.push_back({engine_format::ProfileEntry{0, {1, 4}, {8, 4}, {32, 4}}});
  });
}

// Byte positions of an engine file's header fields (test-side parse of format version 1).
struct HeaderView {
  size_t header_size = 0, version_at = 0, backend_at = 0;
  struct Section { uint32_t id; uint64_t offset, size; size_t crc_at; };
  std::vector<Section> sections;
};

inline HeaderView view_header(const std::vector<uint8_t>& b) {
  HeaderView h;
  auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, b.data() + at, 4); return v; };
  auto u64 = [&](size_t at) { uint64_t v; std::memcpy(&v, b.data() + at, 8); return v; };
  h.header_size = u32(12);
  h.version_at = 24;
  size_t p = 24 + 4 + u32(24);
  h.backend_at = p++;
  p += 4 + u32(p);
  uint32_t n = u32(p);
  p += 4;
  for (uint32_t i = 0; i < n; ++i, p += 24) h.sections.push_back({u32(p), u64(p + 4), u64(p + 12), p + 20});
  return h;
}

// Recomputes every checksum so that a deliberate edit reaches the section parsers.
inline void fix_checksums(std::vector<uint8_t>& b) {
  HeaderView h = view_header(b);
  for (auto& s : h.sections) {
    uint32_t crc = engine_format::crc32(b.data() + s.offset, s.size);
    std::memcpy(b.data() + s.crc_at, &crc, 4);
  }
  uint32_t crc = engine_format::crc32(b.data(), h.header_size - 4);
  std::memcpy(b.data() + h.header_size - 4, &crc, 4);
}

inline HostTensor host_f32(Dims dims, const std::vector<float>& v) {
  HostTensor t;
  t.dtype = DataType::kFLOAT;
  t.dims = std::move(dims);
  t.data.resize(v.size() * 4);
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

inline std::vector<float> to_f32(const HostTensor& t) {
  std::vector<float> v(t.data.size() / 4);
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

}  // namespace kiln::test
