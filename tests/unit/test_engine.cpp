// Engine file tests: format round trip, writer output, and the reader's answers to truncated, corrupt or foreign files.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "engine_test_util.h"
#include "runtime/engine_plan.h"

using namespace kiln;
using namespace kiln::test;
namespace fmt = kiln::engine_format;

namespace {

Status load(const std::vector<uint8_t>& b, size_t n) {
  Runtime rt;
  auto r = rt.deserialize_engine(b.data(), n);
  return r.ok() ? Status::Ok() : r.status();
}
Status load(const std::vector<uint8_t>& b) { return load(b, b.size()); }

size_t find_bytes(const std::vector<uint8_t>& b, const std::string& s) {
  auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
  return it == b.end() ? std::string::npos : static_cast<size_t>(it - b.begin());
}

class QuietLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

}  // namespace

TEST(EngineFormat, Crc32MatchesKnownValue) {
  EXPECT_EQ(fmt::crc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(fmt::crc32("", 0), 0u);
  // Incremental use gives the same result as one call (slicing path and byte path agree).
  std::string s(1000, 'k');
  EXPECT_EQ(fmt::crc32(s.data() + 3, 997, fmt::crc32(s.data(), 3)), fmt::crc32(s.data(), 1000));
}

TEST(EngineFormat, ReaderRejectsHugeCountsWithoutAllocating) {
  std::vector<uint8_t> b = {0xff, 0xff, 0xff, 0xff, 1, 2};
  fmt::ByteReader r(b.data(), b.size(), "section 'nodes'", 100);
  uint32_t n;
  Status st = r.count(&n, 8, "nodes");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
  EXPECT_NE(st.message().find("count of nodes is 4294967295 but only 2 bytes remain"), std::string::npos) << st.message();
  std::string s;
  fmt::ByteReader r2(b.data(), b.size(), "x");
  EXPECT_FALSE(r2.str(&s).ok());
}

TEST(EngineFormat, EveryAttributeTypeRoundTrips) {
  fmt::EngineFile f;
  f.values.resize(2);
  f.values[0].name = "a";
  f.values[0].shape = {ops::Dim::symbol("batch"), ops::Dim(3), ops::Dim()};
  f.values[1].name = "c";
  f.values[1].dtype = DataType::kINT64;
  f.values[1].shape = {ops::Dim(2)};
  f.values[1].is_constant = true;
  Tensor c = Tensor::from_vector<int64_t>({2}, {5, -6});
  fmt::NodeRecord n;
  n.name = "n";
  n.op_type = "Custom";
  n.domain = "com.example";
  n.opset = 3;
  n.attrs.set("i", Attribute(int64_t{-42}));
  n.attrs.set("f", Attribute(2.5f));
  n.attrs.set("s", Attribute("hello"));
  n.attrs.set("is", Attribute(std::vector<int64_t>{1, -2, 3}));
  n.attrs.set("fs", Attribute(std::vector<float>{0.5f, -1.f}));
  n.attrs.set("ss", Attribute(std::vector<std::string>{"p", "", "q"}));
  n.attrs.set("t", Attribute(Tensor::from_vector<bool>({2, 2}, {true, false, false, true})));
  n.inputs = {0, -1, 1};
  n.outputs = {0};
  f.nodes.push_back(n);
  f.io = {{0, TensorIOMode::kINPUT}};
  f.metadata["k"] = "v";
  auto bytes = fmt::encode(f, {nullptr, &c});
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto d = fmt::decode(bytes->data(), bytes->size());
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(d->metadata.at("k"), "v");
  ASSERT_EQ(d->values.size(), 2u);
  EXPECT_EQ(ops::shape_to_string(d->values[0].shape), "[batch,3,?]");
  EXPECT_TRUE(d->values[1].is_constant);
  EXPECT_EQ(d->values[1].weight_size, 16u);
  EXPECT_EQ((d->weights_offset + d->values[1].weight_offset) % 64, 0u);
  const auto& a = d->nodes[0].attrs;
  EXPECT_EQ(d->nodes[0].domain, "com.example");
  EXPECT_EQ(d->nodes[0].opset, 3);
  EXPECT_EQ(d->nodes[0].inputs, (std::vector<int32_t>{0, -1, 1}));
  EXPECT_EQ(a.find("i")->i(), -42);
  EXPECT_EQ(a.find("f")->f(), 2.5f);
  EXPECT_EQ(a.find("s")->s(), "hello");
  EXPECT_EQ(a.find("is")->ints(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(a.find("fs")->floats(), (std::vector<float>{0.5f, -1.f}));
  EXPECT_EQ(a.find("ss")->strings(), (std::vector<std::string>{"p", "", "q"}));
  const Tensor& t = a.find("t")->t();
  EXPECT_EQ(t.dtype(), DataType::kBOOL);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.get_i64(0), 1);
  EXPECT_EQ(t.get_i64(1), 0);
}

TEST(EngineWriter, WritesValuesNodesIoAndAlignedWeights) {
  auto g = make_test_graph();
  g->add_value("unused_value");  // not referenced by any node or I/O: must not be written
  auto bytes = builder::write_engine(*g, BuilderConfig());
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  ASSERT_EQ(std::memcmp(bytes->data(), "KILNENG1", 8), 0);
  auto f = fmt::decode(bytes->data(), bytes->size());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->header.kiln_version, kiln_version_string());
  EXPECT_EQ(f->header.backend, Backend::kCPU);
  EXPECT_EQ(f->header.device.rfind("cpu/", 0), 0u) << f->header.device;
  EXPECT_EQ(f->metadata.at("graph_name"), "test_graph");
  EXPECT_EQ(f->nodes.size(), 4u);
  EXPECT_EQ(f->io.size(), 5u);  // x, y, mask, w_out, b_out
  for (auto& v : f->values) EXPECT_NE(v.name, "unused_value");
  int constants = 0;
  for (auto& v : f->values) {
    if (!v.is_constant) continue;
    ++constants;
    EXPECT_EQ((f->weights_offset + v.weight_offset) % 64, 0u) << v.name;
  }
  EXPECT_EQ(constants, 2);
  EXPECT_EQ(f->values[0].name, "x");
  EXPECT_EQ(ops::shape_to_string(f->values[0].shape), "[N,4]");
  EXPECT_EQ(f->nodes[1].attrs.find("ratio")->f(), 0.25f);
}

TEST(EngineWriter, RejectsProfileForUnknownInputAndOutputThatIsAnInput) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = add_input(*g, "x", DataType::kFLOAT, {2});
  g->outputs().push_back(x);
  auto r = builder::write_engine(*g, BuilderConfig());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is also a network input"), std::string::npos);
}

TEST(EngineReader, LoadsTheWrittenEngine) {
  auto b = build_test_engine();
  ASSERT_FALSE(b.empty());
  Runtime rt;
  auto e = rt.deserialize_engine(b.data(), b.size());
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  const auto& plan = (*e)->plan();
  EXPECT_EQ(plan.nodes.size(), 4u);
  EXPECT_NE(plan.nodes[0].schema, nullptr);
  for (auto& v : plan.values) {
    if (v.constant.defined()) EXPECT_EQ(reinterpret_cast<uintptr_t>(v.constant.raw()) % 64, 0u) << v.name;
  }
  // 'mask' is an engine output and 't' is released after the Dropout reads it.
  EXPECT_EQ(plan.nodes[1].release_after, std::vector<int>{plan.nodes[0].outputs[0]});
}

TEST(EngineReader, UnknownOperatorNamesNodeAndOp) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = add_input(*g, "x", DataType::kFLOAT, {2});
  ir::Node* n = add_node(*g, "NoSuchOp", "mystery", {x}, {"y"}, DataType::kFLOAT, {2});
  g->outputs().push_back(n->outputs[0]);
  auto b = builder::write_engine(*g, BuilderConfig());
  ASSERT_TRUE(b.ok());
  Status st = load(*b);
  ASSERT_EQ(st.code(), ErrorCode::kInvalidEngine);
  EXPECT_NE(st.message().find("'mystery' (NoSuchOp) uses operator 'NoSuchOp'"), std::string::npos) << st.message();
}

TEST(EngineReader, ValueIdsOutOfRangeAndBadOrderAreRejected) {
  auto b = build_test_engine();
  auto bad_id = reencode(b, [](fmt::EngineFile& f) { f.nodes[0].inputs[0] = 99; });
  Status st = load(bad_id);
  EXPECT_NE(st.message().find("refers to value 99 but the engine has"), std::string::npos) << st.message();
  auto order = reencode(b, [](fmt::EngineFile& f) { std::swap(f.nodes[0], f.nodes[1]); });
  st = load(order);
  EXPECT_NE(st.message().find("before any node produces it"), std::string::npos) << st.message();
  auto arity = reencode(b, [](fmt::EngineFile& f) { f.nodes[0].inputs.push_back(0); });
  st = load(arity);
  EXPECT_NE(st.message().find("expected 1 inputs, found 2"), std::string::npos) << st.message();
  auto attr = reencode(b, [](fmt::EngineFile& f) { f.nodes[0].attrs.set("bogus", Attribute(int64_t{1})); });
  st = load(attr);
  EXPECT_NE(st.message().find("unknown attribute 'bogus'"), std::string::npos) << st.message();
}

TEST(EngineReader, WrongMagic) {
  auto b = build_test_engine();
  b[0] = 'X';
  EXPECT_EQ(load(b).message(), "not a Kiln engine (bad magic)");
  std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(load(text).message(), "not a Kiln engine (bad magic)");
  EXPECT_EQ(load(text, 0).code(), ErrorCode::kInvalidEngine);
}

TEST(EngineReader, FutureFormatVersion) {
  auto b = build_test_engine();
  uint32_t v = 7;
  std::memcpy(b.data() + 8, &v, 4);
  Status st = load(b);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
  EXPECT_EQ(st.message(),
            "engine format version 7 is not supported by this Kiln (supports 1); rebuild the engine with this version");
}

TEST(EngineReader, OtherKilnVersion) {
  auto b = build_test_engine();
  auto other = reencode(b, [](fmt::EngineFile& f) { f.header.kiln_version = "9.9.9"; });
  Status st = load(other);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
  EXPECT_EQ(st.message().rfind(std::string("engine built with Kiln 9.9.9 but this is Kiln ") + kiln_version_string(), 0), 0u)
      << st.message();
}

TEST(EngineReader, ForeignBackend) {
  auto b = build_test_engine();
  HeaderView h = view_header(b);
  b[h.backend_at] = static_cast<uint8_t>(Backend::kCUDA);
  fix_checksums(b);
  Status st = load(b);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
  // A CPU engine relabelled as CUDA records no GPU: rejected whether or not this machine has one.
  EXPECT_EQ(st.message().rfind("engine was built for backend cuda but", 0), 0u) << st.message();
  b[h.backend_at] = 9;
  fix_checksums(b);
  EXPECT_NE(load(b).message().find("backend code 9 is unknown"), std::string::npos);
}

TEST(EngineReader, EveryTruncationFails) {
  QuietLogger quiet;
  Runtime rt(quiet);
  auto b = build_test_engine();
  ASSERT_GT(b.size(), 200u);
  HeaderView h = view_header(b);
  for (size_t n = 0; n < b.size(); ++n) {
    auto r = rt.deserialize_engine(b.data(), n);
    ASSERT_FALSE(r.ok()) << "length " << n;
    ASSERT_EQ(r.status().code(), ErrorCode::kInvalidEngine) << n;
    ASSERT_NE(r.status().message().find(n == 0 ? "empty" : "truncated"), std::string::npos)
        << n << ": " << r.status().message();
  }
  // The weights section is last: cutting into it names it with the sizes involved.
  const auto& w = h.sections.back();
  ASSERT_EQ(w.id, static_cast<uint32_t>(fmt::SectionId::kWeights));
  size_t n = w.offset + w.size - 1;
  Status st = load(b, n);
  EXPECT_EQ(st.message(), "engine file is truncated: section 'weights' needs " + std::to_string(w.size) +
                              " bytes at offset " + std::to_string(w.offset) + " but the file has " + std::to_string(n));
  // Extra bytes at the end are reported too.
  auto longer = b;
  longer.push_back(0);
  EXPECT_NE(load(longer).message().find("unexpected bytes after its end"), std::string::npos);
}

TEST(EngineReader, EverySingleByteFlipFails) {
  QuietLogger quiet;
  Runtime rt(quiet);
  auto b = build_test_engine();
  HeaderView h = view_header(b);
  for (size_t i = 0; i < b.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      auto c = b;
      c[i] ^= mask;
      auto r = rt.deserialize_engine(c.data(), c.size());
      ASSERT_FALSE(r.ok()) << "flip at " << i;
      ASSERT_EQ(r.status().code(), ErrorCode::kInvalidEngine) << i;
      for (auto& s : h.sections) {
        if (i >= s.offset && i < s.offset + s.size) {
          std::string want = std::string("checksum mismatch in section '") +
                             fmt::section_name(static_cast<fmt::SectionId>(s.id)) + "' (file is corrupt)";
          ASSERT_EQ(r.status().message(), want) << i;
        }
      }
    }
  }
  // Spot checks that the markers lie in the sections one expects.
  auto flip_at = [&](size_t i) { auto c = b; c[i] ^= 1; return load(c).message(); };
  EXPECT_EQ(flip_at(find_bytes(b, "identity_node_marker")), "checksum mismatch in section 'nodes' (file is corrupt)");
  EXPECT_EQ(flip_at(find_bytes(b, "weight_marker")), "checksum mismatch in section 'values' (file is corrupt)");
  EXPECT_EQ(flip_at(h.sections.back().offset), "checksum mismatch in section 'weights' (file is corrupt)");
  EXPECT_EQ(flip_at(h.header_size - 1), "checksum mismatch in the engine header (file is corrupt)");
}

// Corruption that keeps the checksums valid (a crafted file) must reach the section parsers and still
// fail cleanly or load something consistent; run under ASan to catch out-of-bounds reads.
TEST(EngineReader, CraftedCorruptionWithValidChecksumsNeverCrashes) {
  QuietLogger quiet;
  Runtime rt(quiet);
  auto b = build_test_engine();
  HeaderView h = view_header(b);
  std::mt19937 rng(1234);
  int failures = 0, loads = 0;
  for (auto& s : h.sections) {
    if (s.id == static_cast<uint32_t>(fmt::SectionId::kWeights)) continue;  // any bytes are valid weights
    for (size_t i = s.offset; i < s.offset + s.size; ++i) {
      for (uint8_t v : {uint8_t(0xff), uint8_t(0x00), uint8_t(0x80), uint8_t(rng() & 0xff)}) {
        auto c = b;
        c[i] = v;
        fix_checksums(c);
        auto r = rt.deserialize_engine(c.data(), c.size());
        if (!r.ok()) {
          ++failures;
          EXPECT_EQ(r.status().code(), ErrorCode::kInvalidEngine) << r.status().message();
          continue;
        }
        ++loads;
        // Whatever loaded must run or fail with a status.
        auto ctx = (*r)->create_execution_context();
        auto out = ctx->infer({{"x", host_f32({2, 4}, std::vector<float>(8, 1.f))}});
        (void)out;
      }
    }
  }
  EXPECT_GT(failures, 0);
  EXPECT_GT(loads, 0);
}

TEST(EngineReader, RandomBytesAreNotAnEngine) {
  QuietLogger quiet;
  Runtime rt(quiet);
  std::mt19937 rng(7);
  for (int k = 0; k < 200; ++k) {
    std::vector<uint8_t> junk(rng() % 512);
    for (auto& x : junk) x = rng() & 0xff;
    if (junk.size() >= 8 && k % 2) std::memcpy(junk.data(), "KILNENG1", 8);
    auto r = rt.deserialize_engine(junk.data(), junk.size());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidEngine);
  }
}
