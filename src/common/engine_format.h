// The engine file format (version 1), shared by the builder's writer and the runtime's reader.
//
// Layout (all integers little-endian):
//   header   magic "KILNENG1", u32 format version, u32 header size, u64 file size, str Kiln version,
//            u8 backend, str device, u32 section count, section table {u32 id, u64 offset, u64 size,
//            u32 crc32} per section, u32 crc32 of every header byte before it
//   sections each starts 64-byte aligned; the gaps between them are zero bytes (the reader checks, so
//            that every byte of the file is covered by a checksum or a check)
// Strings are u32 length + bytes. Counts are u32 and are checked against the bytes left before use.
// Sections: metadata (key/value strings), values, nodes, io, profiles, weights (raw constant bytes,
// each 64-byte aligned in the file so the runtime can use them in place).
// A value record's flag byte holds rank_known in bit 0 and the ValueKind in bits 1-2 (0 for a tensor, so files
// without sequences are byte-for-byte what they were before kinds existed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/attribute.h"
#include "common/tensor.h"
#include "kiln/status.h"
#include "kiln/types.h"
#include "ops/op.h"

namespace kiln::engine_format {

inline constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'E', 'N', 'G', '1'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kAlignment = 64;

// Numbering is part of the format: append only.
enum class SectionId : uint32_t { kMetadata = 1, kValues = 2, kNodes = 3, kIo = 4, kProfiles = 5, kWeights = 6 };
const char* section_name(SectionId id);

uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// "cpu/x86_64 <model name from /proc/cpuinfo>": recorded so a mismatch can be reported, not enforced.
std::string host_device_string();

// Appends little-endian fields to a growing buffer.
class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(v); }
  void u32(uint32_t v) { put(&v, 4); }
  void u64(uint64_t v) { put(&v, 8); }
  void i32(int32_t v) { put(&v, 4); }
  void i64(int64_t v) { put(&v, 8); }
  void f32(float v) { put(&v, 4); }
  void str(std::string_view s);
  void bytes(const void* p, size_t n) { put(p, n); }
  void align(size_t a) { buf_.resize((buf_.size() + a - 1) / a * a, 0); }
  void patch_u32(size_t at, uint32_t v);
  void patch_u64(size_t at, uint64_t v);
  size_t size() const { return buf_.size(); }
  std::vector<uint8_t>& buffer() { return buf_; }

 private:
  void put(const void* p, size_t n);
  std::vector<uint8_t> buf_;
};

// Reads fields from one region of the file; every read is bounds-checked and fails with an
// InvalidEngine status naming the region and the absolute file offset.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string region, size_t base_offset = 0)
      : data_(data), size_(size), region_(std::move(region)), base_(base_offset) {}
  Status u8(uint8_t* v) { return get(v, 1); }
  Status u32(uint32_t* v) { return get(v, 4); }
  Status u64(uint64_t* v) { return get(v, 8); }
  Status i32(int32_t* v) { return get(v, 4); }
  Status i64(int64_t* v) { return get(v, 8); }
  Status f32(float* v) { return get(v, 4); }
  Status str(std::string* s);
  // Reads a u32 count of items that take at least min_item_bytes each; fails when the rest of the
  // region cannot hold that many (so a corrupt count never drives a huge allocation).
  Status count(uint32_t* n, size_t min_item_bytes, const char* what);
  // Points at the next n bytes without copying.
  Status view(const uint8_t** p, size_t n);
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  Status error(const std::string& what) const;

 private:
  Status get(void* v, size_t n);
  const uint8_t* data_;
  size_t size_;
  std::string region_;
  size_t base_;
  size_t pos_ = 0;
};

// A subgraph attribute as the engine file holds it: a complete nested engine file (so the runtime validates a
// body exactly like the top level) and the node inputs it captures. Written as: u32 count + i32 capture
// indices, u64 size + the nested file's bytes.
class SerializedSubgraph final : public Subgraph {
 public:
  SerializedSubgraph(std::vector<uint8_t> engine, std::vector<int> captures)
      : Subgraph(std::move(captures)), engine_(std::move(engine)) {}
  const std::vector<uint8_t>& engine() const { return engine_; }
  // Ports are only known once the runtime has read the nested engine.
  std::vector<GraphPort> input_ports() const override { return {}; }
  std::vector<GraphPort> output_ports() const override { return {}; }
  std::string describe() const override { return "serialized graph (" + std::to_string(engine_.size()) + " bytes)"; }

 private:
  std::vector<uint8_t> engine_;
};

// The decoded contents of an engine file, independent of the IR and of the runtime's plan.
struct ValueRecord {
  std::string name;
  ValueKind kind = ValueKind::kTENSOR;
  DataType dtype = DataType::kFLOAT;
  bool rank_known = true;
  ops::Shape shape;
  bool is_constant = false;
  uint64_t weight_offset = 0;  // relative to the weights section, 64-byte aligned
  uint64_t weight_size = 0;
};

struct NodeRecord {
  std::string name, op_type, domain;
  int32_t opset = 0;
  Attributes attrs;
  std::vector<int32_t> inputs;  // value ids; -1 for an omitted optional input
  std::vector<int32_t> outputs;
};

struct IoRecord {
  int32_t value = -1;
  TensorIOMode mode = TensorIOMode::kNONE;
};

struct ProfileEntry {
  int32_t value = -1;
  Dims min, opt, max;
};
using ProfileRecord = std::vector<ProfileEntry>;

struct EngineHeader {
  uint32_t format_version = kFormatVersion;
  std::string kiln_version;  // empty: the version of this library
  Backend backend = Backend::kCPU;
  std::string device;
};

struct EngineFile {
  EngineHeader header;
  std::map<std::string, std::string> metadata;
  std::vector<ValueRecord> values;
  std::vector<NodeRecord> nodes;
  std::vector<IoRecord> io;
  std::vector<ProfileRecord> profiles;
  // Where the weights section lies in the decoded file (absolute offset, size).
  uint64_t weights_offset = 0, weights_size = 0;
};

// Encodes file; constant value i takes its bytes from weights[i] (null for non-constants), whose
// size must equal the value's element count times its dtype size. Fills weight offsets/sizes.
Result<std::vector<uint8_t>> encode(EngineFile file, const std::vector<const Tensor*>& weights);

// Decodes and structurally validates every section (bounds, checksums, enum ranges, counts, that
// weights lie inside the weights section). Does not check the Kiln version or the backend, and does
// not check that value ids are in range: see check_compatible and the runtime's reader.
Result<EngineFile> decode(const uint8_t* data, size_t size);

// Fails when the engine was built by another Kiln version or for a backend this build lacks.
Status check_compatible(const EngineHeader& header, const std::vector<Backend>& available);

}  // namespace kiln::engine_format
