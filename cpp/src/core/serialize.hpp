// The .cnn model file format: constants, CRC-32, encode (Model -> bytes) and decode (bytes -> Model).
// Owns the byte layout (docs/cpp.md has the table). Promises: decode reads through a ByteSource (a buffer, or
// a file read with pread by core/model.cpp) only inside [0, size), checks every count, size, offset and id
// before using it, and reads and allocates in proportion to what it has validated: the 64-byte header and
// the section table first (their sizes against the file size), then the structure sections (meta, graph,
// tensors; each bounded by a kMax*Bytes limit), then, once the graph and tensor table are consistent and the
// data section is exactly as large as the weights they declare, the weights, streamed into the ParamStore
// while the CRC-32 is computed; the checksum is compared last. Every problem, an allocation failure
// included, is one cnn::Error "model file 'ORIGIN': WHAT". No file I/O here, so the fuzzer links this alone.
#pragma once
#include <cnnnative/model.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cnn {
namespace fmt {

constexpr char kMagic[8] = {'\x89', 'C', 'N', 'N', '\r', '\n', '\x1a', '\n'};
constexpr size_t kHeaderSize = 64;
constexpr size_t kCrcOffset = 60;         // u32 CRC-32 of bytes [0, 60) then [64, file size)
constexpr size_t kSectionEntrySize = 24;  // u32 kind, u32 reserved, u64 offset, u64 size
constexpr size_t kDataAlign = 64;         // every tensor's data starts at a multiple of 64 in the file
enum Section : uint32_t { kMeta = 1, kGraph = 2, kTensors = 3, kData = 4 };

// Limits a valid file stays within; anything beyond is rejected before allocating.
constexpr uint32_t kMaxSections = 16;
constexpr uint32_t kMaxRank = 8;
constexpr uint32_t kMaxString = 4096;                // bytes in a name, op name or attribute key
constexpr uint32_t kMaxAttrs = 64;                   // attributes per node (ints + floats)
constexpr uint32_t kMaxAttrLen = 64;                 // integers in one attribute list
constexpr uint32_t kMaxNodeIO = 64;                  // inputs or outputs of one node
constexpr uint32_t kMaxValues = 1u << 24;            // values, nodes, tensors in one file
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;  // one stored dimension or |integer attribute|
constexpr int64_t kMaxElements = int64_t(1) << 40;   // elements in one tensor, stored or inferred
// Bytes in each structure section. The loader reads these sections whole (and the decoded graph takes up
// to ~20 times its section in memory), so each is bounded before it is read; real models use kilobytes.
constexpr uint64_t kMaxMetaBytes = uint64_t(4) << 20;      // 4 MiB
constexpr uint64_t kMaxGraphBytes = uint64_t(64) << 20;    // 64 MiB
constexpr uint64_t kMaxTensorsBytes = uint64_t(16) << 20;  // 16 MiB
constexpr uint64_t kMaxPadding = kDataAlign - 1;           // bytes between consecutive sections (alignment)

// CRC-32 (IEEE 802.3, reflected 0xEDB88320), zlib's convention: crc32(crc32(0, a), b) == crc32(0, a + b).
uint32_t crc32(uint32_t crc, const void* data, size_t size);
// The checksum a file of `size` bytes must carry at kCrcOffset (size >= kHeaderSize).
uint32_t file_crc(const uint8_t* data, size_t size);

// Random access to the bytes being decoded. read() copies [offset, offset + n) into dst; decode only asks
// for ranges inside [0, size()) and throws whatever Error read() throws (a file that shrank, an I/O error).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  virtual void read(uint64_t offset, size_t n, uint8_t* dst) = 0;
};

// A ByteSource over a buffer the caller keeps alive.
class MemorySource final : public ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, size_t n, uint8_t* dst) override;

 private:
  const uint8_t* data_;
  size_t size_;
};

std::vector<uint8_t> encode(const Model& m);
// `origin` names the source in error messages (a path, or "<bytes>").
Model decode(ByteSource& src, const std::string& origin);
Model decode(const uint8_t* data, size_t size, const std::string& origin);  // a MemorySource

// Rebuilds `src` through Graph::add_input/add_param/add_node in value-id order (so shape inference re-runs),
// with the graph inputs given `input_shapes`. Checks the structure first-hand (every node reads only values
// defined before it, outputs are consecutive ids) since `src` may come from a file. check_stored: each
// inferred output must equal the shape, dtype and name stored in `src`.
Graph replay(const Graph& src, const std::vector<Shape>& input_shapes, bool check_stored);

// Elements of `s`, or -1 when a dimension is < 1 or the product exceeds kMaxElements (no overflow).
int64_t checked_numel(const Shape& s);

}  // namespace fmt
}  // namespace cnn
