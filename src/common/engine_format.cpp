// Engine file encoding and validating decoding: header, section table, checksums and each section's records.
#include "common/engine_format.h"

#include <algorithm>
#include <array>
#include <fstream>

#include "common/version.h"

namespace kiln::engine_format {

namespace {

// Bytes of the fixed-position header fields: magic, format version, header size, file size.
constexpr size_t kFixedHeaderBytes = 8 + 4 + 4 + 8;
constexpr size_t kSectionEntryBytes = 4 + 8 + 8 + 4;
// A header larger than this is corrupt whatever it claims (strings are short, sections few).
constexpr uint32_t kMaxHeaderBytes = 1u << 20;

constexpr SectionId kAllSections[] = {SectionId::kMetadata, SectionId::kValues,   SectionId::kNodes,
                                      SectionId::kIo,       SectionId::kProfiles, SectionId::kWeights};

// Slicing-by-8 tables: weights can be hundreds of megabytes and are checksummed on every load.
struct CrcTables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

std::string str_of(size_t v) { return std::to_string(v); }

}  // namespace

const char* section_name(SectionId id) {
  switch (id) {
    case SectionId::kMetadata: return "metadata";
    case SectionId::kValues: return "values";
    case SectionId::kNodes: return "nodes";
    case SectionId::kIo: return "io";
    case SectionId::kProfiles: return "profiles";
    case SectionId::kWeights: return "weights";
  }
  return "unknown";
}

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const CrcTables tables;
  const auto& t = tables.t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  while (size >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
          t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string host_device_string() {
  std::string model;
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) model = line.substr(line.find_first_not_of(" \t", colon + 1));
      break;
    }
  }
#if defined(__x86_64__)
  std::string dev = "cpu/x86_64";
#elif defined(__aarch64__)
  std::string dev = "cpu/aarch64";
#else
  std::string dev = "cpu/unknown";
#endif
  return model.empty() ? dev : dev + " " + model;
}

// ---- ByteWriter / ByteReader ----

void ByteWriter::put(const void* p, size_t n) {
  if (n == 0) return;
  const auto* b = static_cast<const uint8_t*>(p);
  buf_.insert(buf_.end(), b, b + n);
}

void ByteWriter::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  put(s.data(), s.size());
}

void ByteWriter::patch_u32(size_t at, uint32_t v) { std::memcpy(buf_.data() + at, &v, 4); }
void ByteWriter::patch_u64(size_t at, uint64_t v) { std::memcpy(buf_.data() + at, &v, 8); }

Status ByteReader::error(const std::string& what) const {
  return invalid_engine("malformed " + region_ + " at offset " + str_of(base_ + pos_) + ": " + what);
}

Status ByteReader::get(void* v, size_t n) {
  if (n > remaining())
    return error("needs " + str_of(n) + " bytes but only " + str_of(remaining()) + " remain");
  std::memcpy(v, data_ + pos_, n);
  pos_ += n;
  return Status::Ok();
}

Status ByteReader::view(const uint8_t** p, size_t n) {
  if (n > remaining())
    return error("needs " + str_of(n) + " bytes but only " + str_of(remaining()) + " remain");
  *p = data_ + pos_;
  pos_ += n;
  return Status::Ok();
}

Status ByteReader::str(std::string* s) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(u32(&n));
  if (n > remaining())
    return error("string of " + str_of(n) + " bytes but only " + str_of(remaining()) + " remain");
  s->assign(reinterpret_cast<const char*>(data_ + pos_), n);
  pos_ += n;
  return Status::Ok();
}

Status ByteReader::count(uint32_t* n, size_t min_item_bytes, const char* what) {
  KILN_RETURN_IF_ERROR(u32(n));
  if (min_item_bytes && *n > remaining() / min_item_bytes)
    return error(std::string("count of ") + what + " is " + str_of(*n) + " but only " + str_of(remaining()) +
                 " bytes remain");
  return Status::Ok();
}

// ---- record encoding ----

namespace {

void write_shape(ByteWriter& w, const ops::Shape& s) {
  w.u32(static_cast<uint32_t>(s.size()));
  for (auto& d : s) {
    w.i64(d.is_static() ? d.value : -1);
    if (!d.is_static()) w.str(d.sym);
  }
}

Status read_shape(ByteReader& r, ops::Shape* s) {
  uint32_t rank;
  KILN_RETURN_IF_ERROR(r.count(&rank, 8, "dims"));
  s->resize(rank);
  for (auto& d : *s) {
    int64_t v;
    KILN_RETURN_IF_ERROR(r.i64(&v));
    if (v < -1) return r.error("dimension " + std::to_string(v) + " is invalid");
    d.value = v;
    if (v < 0) KILN_RETURN_IF_ERROR(r.str(&d.sym));
  }
  return Status::Ok();
}

void write_dims(ByteWriter& w, const Dims& d) {
  w.u32(static_cast<uint32_t>(d.size()));
  for (auto v : d) w.i64(v);
}

Status read_dims(ByteReader& r, Dims* d) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 8, "dims"));
  d->resize(n);
  for (auto& v : *d) {
    KILN_RETURN_IF_ERROR(r.i64(&v));
    if (v < 0) return r.error("dimension " + std::to_string(v) + " is negative");
  }
  return Status::Ok();
}

Status read_dtype(ByteReader& r, DataType* t) {
  uint8_t v;
  KILN_RETURN_IF_ERROR(r.u8(&v));
  if (v >= kNumDataTypes) return r.error("data type code " + std::to_string(v) + " is unknown");
  *t = static_cast<DataType>(v);
  return Status::Ok();
}

// Element count of concrete dims, or an error when it exceeds `limit` (also guards overflow).
Status checked_volume(ByteReader& r, const std::vector<int64_t>& dims, uint64_t limit, uint64_t* out) {
  uint64_t n = 1;
  for (auto d : dims) {
    if (d < 0) return r.error("tensor dimension " + std::to_string(d) + " is negative");
    if (d != 0 && n > limit / static_cast<uint64_t>(d)) return r.error("tensor is larger than the section holding it");
    n *= static_cast<uint64_t>(d);
  }
  *out = n;
  return Status::Ok();
}

void write_attribute(ByteWriter& w, const Attribute& a) {
  w.u8(static_cast<uint8_t>(a.type()));
  switch (a.type()) {
    case AttrType::kINT: w.i64(a.i()); break;
    case AttrType::kFLOAT: w.f32(a.f()); break;
    case AttrType::kSTRING: w.str(a.s()); break;
    case AttrType::kINTS:
      w.u32(static_cast<uint32_t>(a.ints().size()));
      for (auto v : a.ints()) w.i64(v);
      break;
    case AttrType::kFLOATS:
      w.u32(static_cast<uint32_t>(a.floats().size()));
      for (auto v : a.floats()) w.f32(v);
      break;
    case AttrType::kSTRINGS:
      w.u32(static_cast<uint32_t>(a.strings().size()));
      for (auto& s : a.strings()) w.str(s);
      break;
    case AttrType::kTENSOR: {
      const Tensor& t = a.t();
      w.u8(static_cast<uint8_t>(t.dtype()));
      write_dims(w, t.shape());
      w.u64(t.nbytes());
      w.bytes(t.raw(), t.nbytes());
      break;
    }
    case AttrType::kGRAPH: {  // encode() has checked that every graph is serialized
      const auto* g = dynamic_cast<const SerializedSubgraph*>(a.g().get());
      w.u32(static_cast<uint32_t>(g->captures().size()));
      for (int c : g->captures()) w.i32(c);
      w.u64(g->engine().size());
      w.bytes(g->engine().data(), g->engine().size());
      break;
    }
  }
}

Status read_attribute(ByteReader& r, Attribute* out) {
  uint8_t type;
  KILN_RETURN_IF_ERROR(r.u8(&type));
  switch (static_cast<AttrType>(type)) {
    case AttrType::kINT: { int64_t v; KILN_RETURN_IF_ERROR(r.i64(&v)); *out = Attribute(v); return Status::Ok(); }
    case AttrType::kFLOAT: { float v; KILN_RETURN_IF_ERROR(r.f32(&v)); *out = Attribute(v); return Status::Ok(); }
    case AttrType::kSTRING: { std::string s; KILN_RETURN_IF_ERROR(r.str(&s)); *out = Attribute(std::move(s)); return Status::Ok(); }
    case AttrType::kINTS: {
      uint32_t n;
      KILN_RETURN_IF_ERROR(r.count(&n, 8, "ints"));
      std::vector<int64_t> v(n);
      for (auto& x : v) KILN_RETURN_IF_ERROR(r.i64(&x));
      *out = Attribute(std::move(v));
      return Status::Ok();
    }
    case AttrType::kFLOATS: {
      uint32_t n;
      KILN_RETURN_IF_ERROR(r.count(&n, 4, "floats"));
      std::vector<float> v(n);
      for (auto& x : v) KILN_RETURN_IF_ERROR(r.f32(&x));
      *out = Attribute(std::move(v));
      return Status::Ok();
    }
    case AttrType::kSTRINGS: {
      uint32_t n;
      KILN_RETURN_IF_ERROR(r.count(&n, 4, "strings"));
      std::vector<std::string> v(n);
      for (auto& x : v) KILN_RETURN_IF_ERROR(r.str(&x));
      *out = Attribute(std::move(v));
      return Status::Ok();
    }
    case AttrType::kGRAPH: {
      uint32_t n;
      KILN_RETURN_IF_ERROR(r.count(&n, 4, "captures"));
      std::vector<int> captures(n);
      for (auto& c : captures) {
        int32_t v;
        KILN_RETURN_IF_ERROR(r.i32(&v));
        c = v;
      }
      uint64_t size;
      const uint8_t* p;
      KILN_RETURN_IF_ERROR(r.u64(&size));
      if (size > r.remaining()) return r.error("nested graph of " + str_of(size) + " bytes but only " + str_of(r.remaining()) + " remain");
      KILN_RETURN_IF_ERROR(r.view(&p, size));
      *out = Attribute(std::shared_ptr<const Subgraph>(
          std::make_shared<SerializedSubgraph>(std::vector<uint8_t>(p, p + size), std::move(captures))));
      return Status::Ok();
    }
    case AttrType::kTENSOR: {
      DataType dt;
      Dims dims;
      uint64_t nbytes, numel;
      KILN_RETURN_IF_ERROR(read_dtype(r, &dt));
      KILN_RETURN_IF_ERROR(read_dims(r, &dims));
      KILN_RETURN_IF_ERROR(r.u64(&nbytes));
      KILN_RETURN_IF_ERROR(checked_volume(r, dims, r.remaining() / dtype_size(dt), &numel));
      if (nbytes != numel * dtype_size(dt))
        return r.error("tensor attribute holds " + str_of(nbytes) + " bytes but its shape needs " +
                       str_of(numel * dtype_size(dt)));
      const uint8_t* p;
      KILN_RETURN_IF_ERROR(r.view(&p, nbytes));
      Tensor t(dt, dims);
      if (dt == DataType::kBOOL) {
        for (uint64_t i = 0; i < numel; ++i) t.data<bool>()[i] = p[i] != 0;  // any other byte is not a bool
      } else if (nbytes) {
        std::memcpy(t.raw(), p, nbytes);
      }
      *out = Attribute(std::move(t));
      return Status::Ok();
    }
  }
  return r.error("attribute type code " + std::to_string(type) + " is unknown");
}

std::vector<uint8_t> encode_metadata(const EngineFile& f) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(f.metadata.size()));
  for (auto& [k, v] : f.metadata) {
    w.str(k);
    w.str(v);
  }
  return std::move(w.buffer());
}

std::vector<uint8_t> encode_values(const EngineFile& f) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(f.values.size()));
  for (auto& v : f.values) {
    w.str(v.name);
    w.u8(static_cast<uint8_t>(v.dtype));
    w.u8(static_cast<uint8_t>((v.rank_known ? 1 : 0) | static_cast<uint8_t>(v.kind) << 1));
    write_shape(w, v.shape);
    w.u8(v.is_constant ? 1 : 0);
    if (v.is_constant) {
      w.u64(v.weight_offset);
      w.u64(v.weight_size);
    }
  }
  return std::move(w.buffer());
}

std::vector<uint8_t> encode_nodes(const EngineFile& f) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(f.nodes.size()));
  for (auto& n : f.nodes) {
    w.str(n.name);
    w.str(n.op_type);
    w.str(n.domain);
    w.i32(n.opset);
    w.u32(static_cast<uint32_t>(n.attrs.map().size()));
    for (auto& [name, a] : n.attrs.map()) {
      w.str(name);
      write_attribute(w, a);
    }
    w.u32(static_cast<uint32_t>(n.inputs.size()));
    for (auto id : n.inputs) w.i32(id);
    w.u32(static_cast<uint32_t>(n.outputs.size()));
    for (auto id : n.outputs) w.i32(id);
  }
  return std::move(w.buffer());
}

std::vector<uint8_t> encode_io(const EngineFile& f) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(f.io.size()));
  for (auto& io : f.io) {
    w.i32(io.value);
    w.u8(static_cast<uint8_t>(io.mode));
  }
  return std::move(w.buffer());
}

std::vector<uint8_t> encode_profiles(const EngineFile& f) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(f.profiles.size()));
  for (auto& p : f.profiles) {
    w.u32(static_cast<uint32_t>(p.size()));
    for (auto& e : p) {
      w.i32(e.value);
      write_dims(w, e.min);
      write_dims(w, e.opt);
      write_dims(w, e.max);
    }
  }
  return std::move(w.buffer());
}

Status decode_metadata(ByteReader& r, EngineFile* f) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 8, "metadata entries"));
  for (uint32_t i = 0; i < n; ++i) {
    std::string k, v;
    KILN_RETURN_IF_ERROR(r.str(&k));
    KILN_RETURN_IF_ERROR(r.str(&v));
    f->metadata[k] = std::move(v);
  }
  return Status::Ok();
}

Status decode_values(ByteReader& r, EngineFile* f) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 4 + 1 + 1 + 4 + 1, "values"));
  f->values.resize(n);
  for (auto& v : f->values) {
    uint8_t flags, is_const;
    KILN_RETURN_IF_ERROR(r.str(&v.name));
    KILN_RETURN_IF_ERROR(read_dtype(r, &v.dtype));
    KILN_RETURN_IF_ERROR(r.u8(&flags));
    KILN_RETURN_IF_ERROR(read_shape(r, &v.shape));
    KILN_RETURN_IF_ERROR(r.u8(&is_const));
    if ((flags >> 1) >= kNumValueKinds || is_const > 1) return r.error("value '" + v.name + "' has an invalid flag byte");
    v.rank_known = flags & 1;
    v.kind = static_cast<ValueKind>(flags >> 1);
    v.is_constant = is_const;
    if (!v.is_constant) continue;
    if (v.kind != ValueKind::kTENSOR)
      return r.error("constant '" + v.name + "' is " + a_kind(v.kind) + "; constants are tensors");
    KILN_RETURN_IF_ERROR(r.u64(&v.weight_offset));
    KILN_RETURN_IF_ERROR(r.u64(&v.weight_size));
    if (!v.rank_known || !ops::shape_is_static(v.shape))
      return r.error("constant '" + v.name + "' does not have a static shape");
    if (v.weight_offset % kAlignment)
      return r.error("constant '" + v.name + "' is not " + str_of(kAlignment) + "-byte aligned");
    if (v.weight_offset > f->weights_size || v.weight_size > f->weights_size - v.weight_offset)
      return r.error("constant '" + v.name + "' needs " + str_of(v.weight_size) + " bytes at offset " +
                     str_of(v.weight_offset) + " of the weights section, which has " + str_of(f->weights_size));
    uint64_t numel;
    KILN_RETURN_IF_ERROR(checked_volume(r, ops::static_dims(v.shape), f->weights_size, &numel));
    if (numel * dtype_size(v.dtype) != v.weight_size)
      return r.error("constant '" + v.name + "' has " + str_of(v.weight_size) + " bytes but its shape needs " +
                     str_of(numel * dtype_size(v.dtype)));
  }
  return Status::Ok();
}

Status decode_nodes(ByteReader& r, EngineFile* f) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 4 * 3 + 4 + 4 + 4 + 4, "nodes"));
  f->nodes.resize(n);
  for (auto& node : f->nodes) {
    KILN_RETURN_IF_ERROR(r.str(&node.name));
    KILN_RETURN_IF_ERROR(r.str(&node.op_type));
    KILN_RETURN_IF_ERROR(r.str(&node.domain));
    KILN_RETURN_IF_ERROR(r.i32(&node.opset));
    uint32_t na;
    KILN_RETURN_IF_ERROR(r.count(&na, 4 + 1, "attributes"));
    for (uint32_t i = 0; i < na; ++i) {
      std::string name;
      Attribute a;
      KILN_RETURN_IF_ERROR(r.str(&name));
      KILN_RETURN_IF_ERROR(read_attribute(r, &a));
      if (node.attrs.has(name)) return r.error("node '" + node.name + "' repeats attribute '" + name + "'");
      node.attrs.set(name, std::move(a));
    }
    for (auto* ids : {&node.inputs, &node.outputs}) {
      uint32_t k;
      KILN_RETURN_IF_ERROR(r.count(&k, 4, "node inputs/outputs"));
      ids->resize(k);
      for (auto& id : *ids) KILN_RETURN_IF_ERROR(r.i32(&id));
    }
  }
  return Status::Ok();
}

Status decode_io(ByteReader& r, EngineFile* f) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 5, "I/O tensors"));
  f->io.resize(n);
  for (auto& io : f->io) {
    uint8_t mode;
    KILN_RETURN_IF_ERROR(r.i32(&io.value));
    KILN_RETURN_IF_ERROR(r.u8(&mode));
    if (mode != static_cast<uint8_t>(TensorIOMode::kINPUT) && mode != static_cast<uint8_t>(TensorIOMode::kOUTPUT))
      return r.error("I/O mode " + std::to_string(mode) + " is invalid");
    io.mode = static_cast<TensorIOMode>(mode);
  }
  return Status::Ok();
}

Status decode_profiles(ByteReader& r, EngineFile* f) {
  uint32_t n;
  KILN_RETURN_IF_ERROR(r.count(&n, 4, "profiles"));
  f->profiles.resize(n);
  for (auto& p : f->profiles) {
    uint32_t k;
    KILN_RETURN_IF_ERROR(r.count(&k, 4 + 3 * 4, "profile entries"));
    p.resize(k);
    for (auto& e : p) {
      KILN_RETURN_IF_ERROR(r.i32(&e.value));
      KILN_RETURN_IF_ERROR(read_dims(r, &e.min));
      KILN_RETURN_IF_ERROR(read_dims(r, &e.opt));
      KILN_RETURN_IF_ERROR(read_dims(r, &e.max));
      if (e.min.size() != e.opt.size() || e.min.size() != e.max.size())
        return r.error("profile bounds of different ranks");
    }
  }
  return Status::Ok();
}

}  // namespace

// ---- whole file ----

Result<std::vector<uint8_t>> encode(EngineFile file, const std::vector<const Tensor*>& weights) {
  if (weights.size() != file.values.size()) return internal_error("engine encode: one weights entry per value expected");
  for (auto& n : file.nodes)
    for (auto& [name, a] : n.attrs.map())
      if (a.type() == AttrType::kGRAPH && !dynamic_cast<const SerializedSubgraph*>(a.g().get()))
        return internal_error("engine encode: graph attribute '" + name + "' of node '" + n.name +
                              "' is not serialized");
  // Weight placement first: the values section records each constant's offset.
  uint64_t wsize = 0;
  for (size_t i = 0; i < file.values.size(); ++i) {
    auto& v = file.values[i];
    if (!v.is_constant) continue;
    if (!weights[i]) return internal_error("engine encode: constant '" + v.name + "' has no data");
    wsize = (wsize + kAlignment - 1) / kAlignment * kAlignment;
    v.weight_offset = wsize;
    v.weight_size = weights[i]->nbytes();
    wsize += v.weight_size;
  }

  std::vector<std::pair<SectionId, std::vector<uint8_t>>> small = {
      {SectionId::kMetadata, encode_metadata(file)}, {SectionId::kValues, encode_values(file)},
      {SectionId::kNodes, encode_nodes(file)},       {SectionId::kIo, encode_io(file)},
      {SectionId::kProfiles, encode_profiles(file)}};

  ByteWriter w;
  w.bytes(kMagic, sizeof(kMagic));
  w.u32(file.header.format_version);
  size_t header_size_at = w.size();
  w.u32(0);
  size_t file_size_at = w.size();
  w.u64(0);
  w.str(file.header.kiln_version.empty() ? std::string(KILN_VERSION_STRING) : file.header.kiln_version);
  w.u8(static_cast<uint8_t>(file.header.backend));
  w.str(file.header.device);
  w.u32(static_cast<uint32_t>(small.size() + 1));
  size_t table_at = w.size();
  for (size_t i = 0; i < small.size() + 1; ++i) w.bytes(std::array<uint8_t, kSectionEntryBytes>{}.data(), kSectionEntryBytes);
  size_t header_size = w.size() + 4;
  w.u32(0);

  auto put_entry = [&](size_t index, SectionId id, uint64_t offset, uint64_t size, uint32_t crc) {
    size_t at = table_at + index * kSectionEntryBytes;
    w.patch_u32(at, static_cast<uint32_t>(id));
    w.patch_u64(at + 4, offset);
    w.patch_u64(at + 12, size);
    w.patch_u32(at + 20, crc);
  };
  for (size_t i = 0; i < small.size(); ++i) {
    w.align(kAlignment);
    auto& bytes = small[i].second;
    put_entry(i, small[i].first, w.size(), bytes.size(), crc32(bytes.data(), bytes.size()));
    w.bytes(bytes.data(), bytes.size());
  }
  w.align(kAlignment);
  size_t weights_at = w.size();
  w.buffer().resize(weights_at + wsize, 0);
  for (size_t i = 0; i < file.values.size(); ++i) {
    auto& v = file.values[i];
    if (v.is_constant && v.weight_size)
      std::memcpy(w.buffer().data() + weights_at + v.weight_offset, weights[i]->raw(), v.weight_size);
  }
  put_entry(small.size(), SectionId::kWeights, weights_at, wsize, crc32(w.buffer().data() + weights_at, wsize));

  w.patch_u32(header_size_at, static_cast<uint32_t>(header_size));
  w.patch_u64(file_size_at, w.size());
  w.patch_u32(header_size - 4, crc32(w.buffer().data(), header_size - 4));
  return std::move(w.buffer());
}

Result<EngineFile> decode(const uint8_t* data, size_t size) {
  auto truncated_header = [&](size_t need) {
    return invalid_engine("engine file is truncated: the header needs " + str_of(need) + " bytes but the file has " +
                          str_of(size));
  };
  if (size == 0) return invalid_engine("engine file is empty");
  size_t magic_have = std::min(size, sizeof(kMagic));
  if (std::memcmp(data, kMagic, magic_have) != 0) return invalid_engine("not a Kiln engine (bad magic)");
  if (size < kFixedHeaderBytes) return truncated_header(kFixedHeaderBytes);

  EngineFile f;
  uint32_t header_size;
  uint64_t file_size;
  std::memcpy(&f.header.format_version, data + 8, 4);
  std::memcpy(&header_size, data + 12, 4);
  std::memcpy(&file_size, data + 16, 8);
  if (f.header.format_version != kFormatVersion)
    return invalid_engine("engine format version " + std::to_string(f.header.format_version) +
                          " is not supported by this Kiln (supports " + std::to_string(kFormatVersion) +
                          "); rebuild the engine with this version");
  if (header_size < kFixedHeaderBytes + 4 || header_size > kMaxHeaderBytes)
    return invalid_engine("engine header size " + str_of(header_size) + " is invalid (file is corrupt)");
  if (header_size > size) return truncated_header(header_size);
  uint32_t stored_crc;
  std::memcpy(&stored_crc, data + header_size - 4, 4);
  if (crc32(data, header_size - 4) != stored_crc) return invalid_engine("checksum mismatch in the engine header (file is corrupt)");

  ByteReader h(data + kFixedHeaderBytes, header_size - 4 - kFixedHeaderBytes, "engine header", kFixedHeaderBytes);
  uint8_t backend;
  KILN_RETURN_IF_ERROR(h.str(&f.header.kiln_version));
  KILN_RETURN_IF_ERROR(h.u8(&backend));
  KILN_RETURN_IF_ERROR(h.str(&f.header.device));
  if (backend > static_cast<uint8_t>(Backend::kCUDA)) return h.error("backend code " + std::to_string(backend) + " is unknown");
  f.header.backend = static_cast<Backend>(backend);
  uint32_t nsec;
  KILN_RETURN_IF_ERROR(h.count(&nsec, kSectionEntryBytes, "sections"));

  struct Entry { uint32_t id; uint64_t offset, size; uint32_t crc; };
  std::map<SectionId, Entry> sections;
  std::vector<std::pair<uint64_t, uint64_t>> extents = {{0, header_size}};
  for (uint32_t i = 0; i < nsec; ++i) {
    Entry e;
    KILN_RETURN_IF_ERROR(h.u32(&e.id));
    KILN_RETURN_IF_ERROR(h.u64(&e.offset));
    KILN_RETURN_IF_ERROR(h.u64(&e.size));
    KILN_RETURN_IF_ERROR(h.u32(&e.crc));
    auto id = static_cast<SectionId>(e.id);
    // Sections a newer writer adds are skipped: they must stay optional within one format version.
    bool known = std::find(std::begin(kAllSections), std::end(kAllSections), id) != std::end(kAllSections);
    std::string name = known ? section_name(id) : "#" + std::to_string(e.id);
    if (known && sections.count(id)) return invalid_engine("engine header lists section '" + name + "' twice (file is corrupt)");
    if (e.offset > size || e.size > size - e.offset)
      return invalid_engine("engine file is truncated: section '" + name + "' needs " + str_of(e.size) +
                            " bytes at offset " + str_of(e.offset) + " but the file has " + str_of(size));
    extents.push_back({e.offset, e.size});
    if (known) sections[id] = e;
  }
  for (auto id : kAllSections)
    if (!sections.count(id)) return invalid_engine(std::string("engine file has no '") + section_name(id) + "' section");
  if (size != file_size)
    return invalid_engine(size < file_size ? "engine file is truncated: it should have " + str_of(file_size) +
                                                 " bytes but has " + str_of(size)
                                           : "engine file has " + str_of(size - file_size) +
                                                 " unexpected bytes after its end (" + str_of(file_size) + " bytes)");
  // Every byte outside the header and the sections is padding written as zero.
  std::sort(extents.begin(), extents.end());
  uint64_t covered = 0;
  for (size_t i = 0; i <= extents.size(); ++i) {
    uint64_t next = i < extents.size() ? extents[i].first : size;
    if (next < covered) return invalid_engine("engine sections overlap (file is corrupt)");
    for (uint64_t p = covered; p < next; ++p)
      if (data[p] != 0) return invalid_engine("non-zero padding byte at offset " + str_of(p) + " (file is corrupt)");
    if (i < extents.size()) covered = extents[i].first + extents[i].second;
  }
  for (auto& [id, e] : sections)
    if (crc32(data + e.offset, e.size) != e.crc)
      return invalid_engine(std::string("checksum mismatch in section '") + section_name(id) + "' (file is corrupt)");

  f.weights_offset = sections[SectionId::kWeights].offset;
  f.weights_size = sections[SectionId::kWeights].size;
  if (f.weights_offset % kAlignment) return invalid_engine("the weights section is not 64-byte aligned (file is corrupt)");

  using Decoder = Status (*)(ByteReader&, EngineFile*);
  const std::pair<SectionId, Decoder> decoders[] = {{SectionId::kMetadata, decode_metadata},
                                                    {SectionId::kValues, decode_values},
                                                    {SectionId::kNodes, decode_nodes},
                                                    {SectionId::kIo, decode_io},
                                                    {SectionId::kProfiles, decode_profiles}};
  for (auto& [id, fn] : decoders) {
    auto& e = sections[id];
    ByteReader r(data + e.offset, e.size, std::string("section '") + section_name(id) + "'", e.offset);
    KILN_RETURN_IF_ERROR(fn(r, &f));
    if (r.remaining()) return r.error(str_of(r.remaining()) + " unexpected trailing bytes");
  }
  return f;
}

Status check_compatible(const EngineHeader& header, const std::vector<Backend>& available) {
  if (header.kiln_version != KILN_VERSION_STRING)
    return invalid_engine("engine built with Kiln " + header.kiln_version + " but this is Kiln " + KILN_VERSION_STRING +
                          "; rebuild the engine with this version");
  if (std::find(available.begin(), available.end(), header.backend) == available.end()) {
    std::string list;
    for (auto b : available) list += (list.empty() ? "" : ", ") + std::string(backend_name(b));
    return invalid_engine(std::string("engine was built for backend ") + backend_name(header.backend) +
                          " but this Kiln runtime only has: " + list);
  }
  return Status::Ok();
}

}  // namespace kiln::engine_format
