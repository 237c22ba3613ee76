// The fuzz targets and the engine mutator (see fuzz_targets.h).
#include "fuzz_targets.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/engine_format.h"
#include "kiln/builder.h"
#include "kiln/onnx_parser.h"
#include "kiln/runtime.h"

namespace kiln::fuzz {

namespace {

class SilentLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

SilentLogger& silent() {
  static SilentLogger logger;
  return logger;
}

// External data must resolve somewhere: an empty directory of our own, so a model's relative paths find nothing
// (and paths escaping it must be refused by the importer, not read).
const std::string& model_dir() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / "kiln_fuzz_model_dir";
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    return d.string();
  }();
  return dir;
}

// Inputs larger than this are not run: the point is the code paths, and big zero tensors only slow fuzzing.
constexpr int64_t kMaxInputElements = 1 << 16;

}  // namespace

Outcome run_onnx(const uint8_t* data, size_t size) {
  Outcome out;
  Builder builder(silent());
  auto network = builder.create_network();
  OnnxParser parser(*network, silent());
  Status st = parser.parse(data, size, model_dir());
  if (!st.ok()) {
    out.message = st.message();
    for (int i = 0; i < parser.num_errors(); ++i) out.message += "\n  " + parser.get_error(i).to_string();
    return out;
  }
  out.accepted = true;
  auto config = builder.create_builder_config();
  config->set_backend(Backend::kCPU);
  config->set_builder_optimization_level(0);
  OptimizationProfile profile;
  bool dynamic = false;
  for (int i = 0; i < network->num_inputs(); ++i) {
    ITensor* t = network->get_input(i);
    Dims d = t->dims(), lo = d, hi = d;
    bool dyn = false;
    for (size_t k = 0; k < d.size(); ++k)
      if (d[k] < 0) lo[k] = 1, hi[k] = 2, dyn = true;
    if (dyn && profile.set_shape(t->name(), lo, lo, hi).ok()) dynamic = true;
  }
  if (dynamic) config->add_optimization_profile(profile);
  auto engine = builder.build_serialized_network(*network, *config);
  if (!engine.ok()) {
    out.message = engine.status().message();
    return out;
  }
  out.ran = true;
  out.engine = engine.value();
  // The builder's own output must load: a writer/reader disagreement is a bug the engine target cannot see.
  Runtime runtime(silent());
  auto loaded = runtime.deserialize_engine(engine.value().data(), engine.value().size());
  if (!loaded.ok()) {
    std::fprintf(stderr, "kiln fuzz: the engine built from this model does not load: %s\n",
                 loaded.status().message().c_str());
    std::abort();
  }
  return out;
}

Outcome run_engine(const uint8_t* data, size_t size) {
  Outcome out;
  Runtime runtime(silent());
  auto engine = runtime.deserialize_engine(data, size);
  if (!engine.ok()) {
    out.message = engine.status().message();
    return out;
  }
  out.accepted = true;
  Engine& e = *engine.value();
  auto ctx = e.create_execution_context();
  if (!ctx) {
    out.message = "no execution context";
    return out;
  }
  std::vector<std::pair<std::string, HostTensor>> inputs;
  for (int i = 0; i < e.num_io_tensors(); ++i) {
    const std::string& name = e.get_tensor_name(i);
    if (e.get_tensor_mode(name) != TensorIOMode::kINPUT) continue;
    HostTensor t;
    t.dtype = e.get_tensor_dtype(name);
    t.kind = e.get_tensor_kind(name);
    if (t.kind == ValueKind::kTENSOR) {
      t.dims = e.get_tensor_shape(name);
      Dims mn, opt, mx;
      bool bounded = e.num_optimization_profiles() > 0 && e.get_profile_shape(name, 0, &mn, &opt, &mx).ok() &&
                     mn.size() == t.dims.size();
      int64_t n = 1;
      for (size_t k = 0; k < t.dims.size(); ++k) {
        if (t.dims[k] < 0) t.dims[k] = bounded ? mn[k] : 1;
        if (t.dims[k] > kMaxInputElements || (t.dims[k] && n > kMaxInputElements / t.dims[k])) {
          out.message = "input '" + name + "' too large to run";
          return out;
        }
        n *= t.dims[k];
      }
      if (n > kMaxInputElements) {
        out.message = "input '" + name + "' too large to run";
        return out;
      }
      t.data.assign(static_cast<size_t>(n) * dtype_size(t.dtype), 0);
    }  // sequences and optionals: empty
    inputs.emplace_back(name, std::move(t));
  }
  auto r = ctx->infer(inputs);
  if (!r.ok()) out.message = r.status().message();
  out.ran = r.ok();
  return out;
}

// ---- engine mutator ----

namespace {

namespace fmt = engine_format;

struct ParsedEngine {
  std::vector<uint8_t> prefix;  // header bytes up to (not including) the section count
  struct Section {
    uint32_t id;
    std::vector<uint8_t> bytes;
  };
  std::vector<Section> sections;
};

bool parse_engine(const uint8_t* d, size_t n, ParsedEngine* out) {
  auto u32 = [&](size_t p, uint32_t* v) { return p + 4 <= n ? (std::memcpy(v, d + p, 4), true) : false; };
  auto u64 = [&](size_t p, uint64_t* v) { return p + 8 <= n ? (std::memcpy(v, d + p, 8), true) : false; };
  if (n < 24 || std::memcmp(d, fmt::kMagic, 8) != 0) return false;
  size_t p = 24;
  uint32_t len;
  if (!u32(p, &len) || len > n) return false;
  p += 4 + len + 1;  // version string, backend byte
  if (!u32(p, &len) || len > n) return false;
  p += 4 + len;  // device string
  uint32_t nsec;
  if (!u32(p, &nsec) || nsec > 64) return false;
  out->prefix.assign(d, d + p);
  p += 4;
  for (uint32_t i = 0; i < nsec; ++i, p += 24) {
    uint32_t id;
    uint64_t off, size;
    if (!u32(p, &id) || !u64(p + 4, &off) || !u64(p + 12, &size)) return false;
    if (off > n || size > n - off) return false;
    out->sections.push_back({id, std::vector<uint8_t>(d + off, d + off + size)});
  }
  return true;
}

std::vector<uint8_t> lay_out(const ParsedEngine& e) {
  fmt::ByteWriter w;
  w.bytes(e.prefix.data(), e.prefix.size());
  w.u32(static_cast<uint32_t>(e.sections.size()));
  size_t table = w.size();
  for (size_t i = 0; i < e.sections.size(); ++i) {
    w.u32(0), w.u64(0), w.u64(0), w.u32(0);
  }
  size_t header_size = w.size() + 4;
  w.u32(0);
  for (size_t i = 0; i < e.sections.size(); ++i) {
    w.align(fmt::kAlignment);
    auto& s = e.sections[i];
    size_t at = table + i * 24;
    w.patch_u32(at, s.id);
    w.patch_u64(at + 4, w.size());
    w.patch_u64(at + 12, s.bytes.size());
    w.patch_u32(at + 20, fmt::crc32(s.bytes.data(), s.bytes.size()));
    w.bytes(s.bytes.data(), s.bytes.size());
  }
  w.patch_u32(12, static_cast<uint32_t>(header_size));
  w.patch_u64(16, w.size());
  w.patch_u32(header_size - 4, fmt::crc32(w.buffer().data(), header_size - 4));
  return std::move(w.buffer());
}

}  // namespace

size_t mutate_engine(uint8_t* data, size_t size, size_t max_size, unsigned seed, ByteMutator mutate) {
  ParsedEngine e;
  if (!parse_engine(data, size, &e) || e.sections.empty()) return 0;
  // Mostly the record sections (values, nodes, io, profiles); the header strings now and then.
  size_t pick = seed % (e.sections.size() + 1);
  std::vector<uint8_t>* target = pick < e.sections.size() ? &e.sections[pick].bytes : &e.prefix;
  size_t keep = target == &e.prefix ? 24 : 0;  // the fixed fields are rewritten by lay_out anyway
  size_t old = target->size() - keep;
  size_t room = std::min<size_t>(max_size, old + 256);
  target->resize(keep + room);
  size_t n = mutate(target->data() + keep, old, room);
  target->resize(keep + n);
  if (target == &e.prefix && e.prefix.size() < 24) return 0;
  std::vector<uint8_t> out = lay_out(e);
  if (out.size() > max_size) return 0;
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

}  // namespace kiln::fuzz

extern "C" int fuzz_onnx(const uint8_t* data, size_t size) {
  kiln::fuzz::run_onnx(data, size);
  return 0;
}

extern "C" int fuzz_engine(const uint8_t* data, size_t size) {
  kiln::fuzz::run_engine(data, size);
  return 0;
}
