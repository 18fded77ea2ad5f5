// The .cnn format (layout: docs/cpp.md). Little-endian throughout, written and read byte by byte so the
// host's byte order and alignment never matter. decode() validates in this order, each step before the
// next reads anything it guards: magic, version, header size, file size (truncation), section table (read
// whole: at most 16 entries; bounds, size limits, layout), then the bytes before the data section are read
// and each structure section parsed with bounded counts (a count is checked against the bytes left before
// any container is sized by it), the graph is replayed through Graph::add_node (shape inference), the tensor
// table must fill the data section exactly, and only then is the ParamStore allocated and the weights read
// into it, chunk by chunk, feeding the CRC-32, which is compared last.
#include "core/serialize.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <stdexcept>

#include "core/op.hpp"

namespace cnn {
namespace fmt {

// ---- CRC-32, slicing by 8 ----
namespace {
struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (int k = 1; k < 8; ++k)
      for (int i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  }
};
const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}
inline uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t load_le64(const uint8_t* p) { return uint64_t(load_le32(p)) | uint64_t(load_le32(p + 4)) << 32; }
inline void store_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void store_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
}  // namespace

uint32_t crc32(uint32_t crc, const void* data, size_t n) {
  const auto& T = crc_tables().t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t a = crc ^ load_le32(p), b = load_le32(p + 4);
    crc = T[7][a & 0xff] ^ T[6][(a >> 8) & 0xff] ^ T[5][(a >> 16) & 0xff] ^ T[4][a >> 24] ^ T[3][b & 0xff] ^
          T[2][(b >> 8) & 0xff] ^ T[1][(b >> 16) & 0xff] ^ T[0][b >> 24];
  }
  for (; n; --n) crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t file_crc(const uint8_t* data, size_t size) {
  return crc32(crc32(0, data, kCrcOffset), data + kHeaderSize, size - kHeaderSize);
}

int64_t checked_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 1 || n > kMaxElements / d) return -1;
    n *= d;
  }
  return n;
}

namespace {

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) without NUL bytes: names are
// text, and Python decodes them (and error messages quoting them) strictly.
bool valid_text(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (len == 0 || c > 0xF4 || c < 0xC2 || len > n - i) return false;
    uint32_t cp = c & (0x3F >> (len - 1));
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}
size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// floats <-> little-endian bytes
void put_floats(uint8_t* dst, const float* src, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(dst, src, n * 4);
#else
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    store_le32(dst + 4 * i, u);
  }
#endif
}
// In place: little-endian float32 bytes (as read from a file) -> host floats.
void floats_from_le(float* p, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  (void)p;
  (void)n;
#else
  uint8_t* b = reinterpret_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    uint32_t u = load_le32(b + 4 * i);
    std::memcpy(p + i, &u, 4);
  }
#endif
}

// ---- writing ----
class Writer {
 public:
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u32(uint32_t v) {
    uint8_t t[4];
    store_le32(t, v);
    b.insert(b.end(), t, t + 4);
  }
  void u64(uint64_t v) {
    uint8_t t[8];
    store_le64(t, v);
    b.insert(b.end(), t, t + 8);
  }
  void i32(int32_t v) { u32(uint32_t(v)); }
  void i64(int64_t v) { u64(uint64_t(v)); }
  void f64(double v) {
    uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  void str(const std::string& s, const std::string& what) {
    if (s.size() > kMaxString)
      throw Error(what + " is " + std::to_string(s.size()) + " bytes long (at most " + std::to_string(kMaxString) +
                  ")");
    if (!valid_text(reinterpret_cast<const uint8_t*>(s.data()), s.size()))
      throw Error(what + " is not valid UTF-8 text");
    u32(uint32_t(s.size()));
    b.insert(b.end(), s.begin(), s.end());
  }
  void shape(const Shape& s, const std::string& what) {
    if (s.size() > kMaxRank)
      throw Error(what + ": rank " + std::to_string(s.size()) + " (at most " + std::to_string(kMaxRank) + ")");
    if (checked_numel(s) < 0 || std::any_of(s.begin(), s.end(), [](int64_t d) { return d > kMaxDim; }))
      throw Error(what + ": shape " + shape_str(s) + " is outside the format's limits");
    u32(uint32_t(s.size()));
    for (auto d : s) i64(d);
  }
  void ids(const std::vector<int>& v, const std::string& what) {
    if (v.size() > kMaxNodeIO)
      throw Error(what + ": " + std::to_string(v.size()) + " ids (at most " + std::to_string(kMaxNodeIO) + ")");
    u32(uint32_t(v.size()));
    for (int x : v) i32(x);
  }
};

// ---- reading ----
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const char* section) : p_(p), n_(n), section_(section) {}
  size_t left() const { return n_ - pos_; }
  [[noreturn]] void fail(const std::string& m) const { throw Error(std::string(section_) + " section: " + m); }
  const uint8_t* take(size_t k, const std::string& what) {
    if (k > left())
      fail("ends inside " + what + " (" + std::to_string(left()) + " bytes left, " + std::to_string(k) + " needed)");
    const uint8_t* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  uint8_t u8(const std::string& what) { return *take(1, what); }
  uint32_t u32(const std::string& what) { return load_le32(take(4, what)); }
  uint64_t u64(const std::string& what) { return load_le64(take(8, what)); }
  int32_t i32(const std::string& what) { return int32_t(u32(what)); }
  int64_t i64(const std::string& what) { return int64_t(u64(what)); }
  double f64(const std::string& what) {
    uint64_t u = u64(what);
    double d;
    std::memcpy(&d, &u, 8);
    return d;
  }
  std::string str(const std::string& what) {
    uint32_t len = u32(what + " length");
    if (len > kMaxString)
      fail(what + " is " + std::to_string(len) + " bytes long (at most " + std::to_string(kMaxString) + ")");
    const uint8_t* q = take(len, what);
    if (!valid_text(q, len)) fail(what + " is not valid UTF-8 text");
    return std::string(reinterpret_cast<const char*>(q), len);
  }
  // A count of records of at least `min_record` bytes each: bounded by `max` and by the bytes left.
  uint32_t count(const std::string& what, uint32_t max, size_t min_record) {
    uint32_t c = u32("the number of " + what);
    if (c > max) fail(std::to_string(c) + " " + what + " (at most " + std::to_string(max) + ")");
    if (min_record && c > left() / min_record)
      fail(std::to_string(c) + " " + what + " cannot fit in the " + std::to_string(left()) + " bytes left");
    return c;
  }
  Shape shape(const std::string& what) {
    uint32_t r = u32(what + " rank");
    if (r > kMaxRank) fail(what + " has rank " + std::to_string(r) + " (at most " + std::to_string(kMaxRank) + ")");
    Shape s(r);
    for (uint32_t i = 0; i < r; ++i) {
      s[i] = i64(what + " dimensions");
      if (s[i] < 1 || s[i] > kMaxDim)
        fail(what + " has dimension " + std::to_string(s[i]) + " (each must be in [1, " + std::to_string(kMaxDim) +
             "])");
    }
    if (checked_numel(s) < 0) fail(what + " shape " + shape_str(s) + " has more than 2^40 elements");
    return s;
  }
  std::vector<int> ids(const std::string& what, uint32_t max, uint32_t n_values, const std::string& owner) {
    uint32_t c = count(what + "s of " + owner, max, 4);
    std::vector<int> v(c);
    for (auto& x : v) {
      int32_t id = i32(what);
      if (id < 0 || uint32_t(id) >= n_values)
        fail(owner + ": " + what + " value id " + std::to_string(id) + " is out of range (the graph has " +
             std::to_string(n_values) + " values)");
      x = id;
    }
    return v;
  }
  void end() const {
    if (pos_ != n_) fail(std::to_string(left()) + " unread bytes at its end");
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const char* section_;
};

struct TensorRec {
  std::string name;
  bool trainable;
  Shape shape;
  uint64_t offset, nbytes;
};

std::string value_label(const Graph& g, int v) {
  return "value " + std::to_string(v) + " ('" + g.values[v].name + "')";
}

}  // namespace

Graph replay(const Graph& src, const std::vector<Shape>& input_shapes, bool check_stored) {
  Graph g;
  size_t next_node = 0, next_input = 0;
  const int nv = int(src.values.size());
  for (int v = 0; v < nv;) {
    const Value& val = src.values[v];
    if (val.kind == ValueKind::Input) {
      if (next_input >= input_shapes.size()) throw Error("more graph inputs than input shapes");
      const Shape& is = input_shapes[next_input];
      if (checked_numel(is) < 0 && std::all_of(is.begin(), is.end(), [](int64_t d) { return d >= 1; }))
        throw Error("input '" + val.name + "': shape " + shape_str(is) +
                    " has more than 2^40 elements");  // the ops' arithmetic relies on it
      g.add_input(val.name, input_shapes[next_input++], val.desc.dtype);
      ++v;
    } else if (val.kind == ValueKind::Param || val.kind == ValueKind::Buffer) {
      if (val.desc.dtype != DType::f32) throw Error("parameter " + value_label(src, v) + " must be float32");
      g.add_param(val.name, val.desc.shape, val.kind == ValueKind::Param);
      ++v;
    } else {
      if (next_node >= src.nodes.size() || src.nodes[next_node].outputs.empty() || src.nodes[next_node].outputs[0] != v)
        throw Error(value_label(src, v) +
                    " is not the first output of the next node in order (node outputs must follow "
                    "their inputs as consecutive value ids)");
      const Node& n = src.nodes[next_node++];
      for (int in : n.inputs)
        if (in < 0 || in >= v)
          throw Error("node '" + n.name + "' reads value id " + std::to_string(in) +
                      ", which is not defined before it "
                      "(forward or cyclic reference)");
      std::vector<int> outs = g.add_node(n.op, n.inputs, n.attrs, n.name);
      if (outs.size() != n.outputs.size())
        throw Error("node '" + n.name + "' lists " + std::to_string(n.outputs.size()) + " outputs, op '" + n.op +
                    "' gives " + std::to_string(outs.size()));
      for (size_t k = 0; k < outs.size(); ++k) {
        if (n.outputs[k] != outs[k] || (k > 0 && src.values[outs[k]].kind != ValueKind::Intermediate))
          throw Error("node '" + n.name + "': outputs must be consecutive intermediate value ids starting at " +
                      std::to_string(v));
        const TensorDesc& d = g.values[outs[k]].desc;
        if (checked_numel(d.shape) < 0)
          throw Error("node '" + n.name + "': output shape " + shape_str(d.shape) + " has more than 2^40 elements");
        const Value& stored = src.values[outs[k]];
        if (check_stored &&
            (stored.desc.shape != d.shape || stored.desc.dtype != d.dtype || stored.name != g.values[outs[k]].name))
          throw Error(value_label(src, outs[k]) + " is stored as " + shape_str(stored.desc.shape) + " " +
                      dtype_name(stored.desc.dtype) + ", shape inference of node '" + n.name + "' gives '" +
                      g.values[outs[k]].name + "' " + shape_str(d.shape) + " " + dtype_name(d.dtype));
      }
      v += int(outs.size());
    }
  }
  if (next_node != src.nodes.size()) throw Error("node '" + src.nodes[next_node].name + "' produces no value in order");
  if (g.inputs != src.inputs) throw Error("the graph input list does not match the input values in order");
  if (g.params != src.params) throw Error("the graph parameter list does not match the parameter values in order");
  g.set_outputs(src.outputs);
  return g;
}

// ---- encode ----
std::vector<uint8_t> encode(const Model& m) {
  const Graph& g = m.graph();
  ParamStore& store = *m.params();
  if (g.values.size() > kMaxValues || g.nodes.size() > kMaxValues || store.entries().size() > kMaxValues)
    throw Error("the model is larger than the format allows (" + std::to_string(kMaxValues) +
                " values, nodes or tensors)");

  Writer meta;
  meta.shape(m.input_shape(), "input shape");
  meta.u32(uint32_t(m.extra_state().size()));
  for (auto& kv : m.extra_state()) {
    meta.str(kv.first, "extra state name");
    meta.i64(kv.second);
  }

  Writer gr;
  gr.u32(uint32_t(g.values.size()));
  for (auto& v : g.values) {
    gr.u8(uint8_t(v.kind));
    gr.u8(uint8_t(v.desc.dtype));
    gr.str(v.name, "value name");
    gr.shape(v.desc.shape, "value '" + v.name + "'");
  }
  gr.u32(uint32_t(g.nodes.size()));
  for (auto& n : g.nodes) {
    gr.str(n.op, "op name");
    gr.str(n.name, "node name");
    if (n.attrs.ints.size() + n.attrs.floats.size() > kMaxAttrs)
      throw Error("node '" + n.name + "' has more than " + std::to_string(kMaxAttrs) + " attributes");
    gr.u32(uint32_t(n.attrs.ints.size()));
    for (auto& kv : n.attrs.ints) {
      gr.str(kv.first, "attribute name");
      if (kv.second.size() > kMaxAttrLen)
        throw Error("node '" + n.name + "': attribute '" + kv.first + "' holds more than " +
                    std::to_string(kMaxAttrLen) + " integers");
      gr.u32(uint32_t(kv.second.size()));
      for (auto x : kv.second) {
        if (x > kMaxDim || x < -kMaxDim)
          throw Error("node '" + n.name + "': attribute '" + kv.first + "' value " + std::to_string(x) +
                      " is out of range");
        gr.i64(x);
      }
    }
    gr.u32(uint32_t(n.attrs.floats.size()));
    for (auto& kv : n.attrs.floats) {
      gr.str(kv.first, "attribute name");
      gr.f64(kv.second);
    }
    gr.ids(n.inputs, "node '" + n.name + "' inputs");
    gr.ids(n.outputs, "node '" + n.name + "' outputs");
  }
  gr.ids(g.inputs, "graph inputs");
  gr.ids(g.outputs, "graph outputs");

  Writer tens;
  std::vector<size_t> patch;  // where each tensor's offset goes inside `tens`
  tens.u32(uint32_t(store.entries().size()));
  for (auto& e : store.entries()) {
    tens.str(e.name, "tensor name");
    tens.u8(e.trainable ? 1 : 0);
    tens.shape(e.shape, "tensor '" + e.name + "'");
    patch.push_back(tens.b.size());
    tens.u64(0);
    tens.u64(uint64_t(numel(e.shape)) * 4);
  }

  const struct {
    const char* name;
    size_t size;
    uint64_t limit;
  } parts[3] = {{"meta", meta.b.size(), kMaxMetaBytes},
                {"graph", gr.b.size(), kMaxGraphBytes},
                {"tensors", tens.b.size(), kMaxTensorsBytes}};
  for (auto& p : parts)
    if (p.size > p.limit)
      throw Error(std::string("the ") + p.name + " section would be " + std::to_string(p.size) +
                  " bytes long, more than the format's limit of " + std::to_string(p.limit));

  const size_t n_sections = 4;
  const size_t meta_off = kHeaderSize + n_sections * kSectionEntrySize;
  const size_t graph_off = align_up(meta_off + meta.b.size(), 8);
  const size_t tens_off = align_up(graph_off + gr.b.size(), 8);
  const size_t data_off = align_up(tens_off + tens.b.size(), kDataAlign);
  size_t end = data_off;
  std::vector<size_t> offsets;
  for (auto& e : store.entries()) {
    end = align_up(end, kDataAlign);
    offsets.push_back(end);
    end += size_t(numel(e.shape)) * 4;
  }
  for (size_t i = 0; i < patch.size(); ++i) store_le64(tens.b.data() + patch[i], offsets[i]);

  std::vector<uint8_t> out(end, 0);
  uint8_t* h = out.data();
  std::memcpy(h, kMagic, 8);
  store_le32(h + 8, kModelFormatVersion);
  store_le32(h + 12, uint32_t(kHeaderSize));
  store_le64(h + 16, end);
  store_le32(h + 24, uint32_t(n_sections));
  store_le32(h + 28, 0);  // flags
  store_le64(h + 32, kHeaderSize);
  const uint64_t table[4][3] = {{kMeta, meta_off, meta.b.size()},
                                {kGraph, graph_off, gr.b.size()},
                                {kTensors, tens_off, tens.b.size()},
                                {kData, data_off, end - data_off}};
  for (size_t i = 0; i < n_sections; ++i) {
    uint8_t* t = h + kHeaderSize + i * kSectionEntrySize;
    store_le32(t, uint32_t(table[i][0]));
    store_le32(t + 4, 0);
    store_le64(t + 8, table[i][1]);
    store_le64(t + 16, table[i][2]);
  }
  std::copy(meta.b.begin(), meta.b.end(), h + meta_off);
  std::copy(gr.b.begin(), gr.b.end(), h + graph_off);
  std::copy(tens.b.begin(), tens.b.end(), h + tens_off);
  for (size_t i = 0; i < offsets.size(); ++i) {
    auto& e = store.entries()[i];
    put_floats(h + offsets[i], store.data(e), size_t(numel(e.shape)));
  }
  store_le32(h + kCrcOffset, file_crc(h, end));
  return out;
}

// ---- decode ----
void MemorySource::read(uint64_t offset, size_t n, uint8_t* dst) {
  if (offset > size_ || n > size_ - offset) throw Error("read past the end of the buffer");  // decode never asks
  if (n) std::memcpy(dst, data_ + offset, n);
}

namespace {

const char* const kSectionNames[5] = {"", "meta", "graph", "tensors", "data"};
const uint64_t kSectionLimits[5] = {0, kMaxMetaBytes, kMaxGraphBytes, kMaxTensorsBytes, UINT64_MAX};
constexpr size_t kReadChunk = size_t(8) << 20;  // weights are read (and checksummed) this many bytes at a time

std::string n_bytes(uint64_t b) {
  std::string s = std::to_string(b) + " bytes";
  if (b >= (uint64_t(1) << 20)) {
    char buf[48];
    if (b >= (uint64_t(1) << 30))
      std::snprintf(buf, sizeof buf, " (%.1f GiB)", double(b) / double(uint64_t(1) << 30));
    else
      std::snprintf(buf, sizeof buf, " (%.1f MiB)", double(b) / double(uint64_t(1) << 20));
    s += buf;
  }
  return s;
}

uint64_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : UINT64_MAX;
}

// For a truncated file: where it ends, from the section table when that much of the file is there and the
// table looks sane (best effort: never throws, "" when it cannot tell).
std::string where_it_ends(ByteSource& src, const uint8_t* h, uint64_t size) {
  try {
    const uint32_t n = load_le32(h + 24);
    const uint64_t toff = load_le64(h + 32);
    if (n < 1 || n > kMaxSections || toff < kHeaderSize || toff > (uint64_t(1) << 32)) return "";
    if (size < toff + uint64_t(n) * kSectionEntrySize) return " (the file ends inside the section table)";
    uint8_t t[kMaxSections * kSectionEntrySize];
    src.read(toff, n * kSectionEntrySize, t);
    std::string before;
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < n; ++i) {
      const uint8_t* e = t + i * kSectionEntrySize;
      const uint32_t kind = load_le32(e);
      const uint64_t off = load_le64(e + 8), sz = load_le64(e + 16);
      if (kind < kMeta || kind > kData) return "";
      if (off <= size && size - off < sz)
        return std::string(" (the file ends inside the ") + kSectionNames[kind] + " section, which spans bytes [" +
               std::to_string(off) + ", " + std::to_string(off + sz < off ? UINT64_MAX : off + sz) + "))";
      if (off >= size && off < next) {
        next = off;
        before = std::string(" (the file ends before the ") + kSectionNames[kind] + " section, which starts at byte " +
                 std::to_string(off) + ")";
      }
    }
    return before;
  } catch (...) {
    return "";
  }
}

// CRC-32 of [from, to) of `src`, continuing `crc`, read through a small buffer (alignment padding).
uint32_t crc_range(ByteSource& src, uint64_t from, uint64_t to, uint32_t crc) {
  uint8_t buf[4096];
  while (from < to) {
    size_t k = size_t(std::min<uint64_t>(to - from, sizeof buf));
    src.read(from, k, buf);
    crc = crc32(crc, buf, k);
    from += k;
  }
  return crc;
}

Model decode_impl(ByteSource& file) {
  const uint64_t size = file.size();
  // Header: at most 64 bytes read, whatever the file's size.
  uint8_t h[kHeaderSize];
  file.read(0, size_t(std::min<uint64_t>(size, kHeaderSize)), h);
  if (std::memcmp(h, kMagic, size_t(std::min<uint64_t>(size, 8))) != 0)
    throw Error("not a cnnnative model file (bad magic bytes)");
  if (size < kHeaderSize)
    throw Error("truncated: " + std::to_string(size) + " bytes, shorter than the " + std::to_string(kHeaderSize) +
                "-byte header");
  uint32_t version = load_le32(h + 8);
  if (version != kModelFormatVersion)
    throw Error("format version " + std::to_string(version) + " is not supported (this build reads version " +
                std::to_string(kModelFormatVersion) + ")");
  if (load_le32(h + 12) != kHeaderSize)
    throw Error("header size " + std::to_string(load_le32(h + 12)) + ", expected 64");
  uint64_t file_size = load_le64(h + 16);
  if (file_size != size) {
    if (file_size > size)
      throw Error("truncated: " + std::to_string(size) + " bytes, the header says " + std::to_string(file_size) +
                  where_it_ends(file, h, size));
    throw Error(std::to_string(size) + " bytes, but the header says " + std::to_string(file_size) + " (trailing data)");
  }
  uint32_t n_sections = load_le32(h + 24), flags = load_le32(h + 28);
  uint64_t table_off = load_le64(h + 32);
  if (flags != 0) throw Error("unknown header flags " + hex32(flags));
  for (size_t i = 40; i < kCrcOffset; ++i)
    if (h[i]) throw Error("reserved header bytes are not zero");
  if (n_sections < 1 || n_sections > kMaxSections)
    throw Error(std::to_string(n_sections) + " sections (1 to " + std::to_string(kMaxSections) + " expected)");
  if (table_off < kHeaderSize || table_off % 8 || table_off > size ||
      (size - table_off) / kSectionEntrySize < n_sections)
    throw Error("the section table (offset " + std::to_string(table_off) + ", " + std::to_string(n_sections) +
                " entries) lies outside the file");
  const uint64_t table_end = table_off + uint64_t(n_sections) * kSectionEntrySize;

  // Section table (at most 16 entries): bounds against the file size, size limits, then the layout.
  struct Sec {
    uint64_t off = 0, size = 0;
    bool present = false;
  };
  Sec sec[5];
  uint8_t table[kMaxSections * kSectionEntrySize];
  file.read(table_off, n_sections * kSectionEntrySize, table);
  for (uint32_t i = 0; i < n_sections; ++i) {
    const uint8_t* t = table + i * kSectionEntrySize;
    uint32_t kind = load_le32(t);
    uint64_t off = load_le64(t + 8), sz = load_le64(t + 16);
    if (kind < kMeta || kind > kData) throw Error("unknown section kind " + std::to_string(kind));
    const std::string name = kSectionNames[kind];
    if (load_le32(t + 4)) throw Error(name + " section: reserved field is not zero");
    if (sec[kind].present) throw Error(name + " section appears twice");
    if (off < table_end || off > size || sz > size - off)
      throw Error(name + " section (offset " + std::to_string(off) + ", size " + std::to_string(sz) +
                  ") lies outside the file (" + std::to_string(size) + " bytes) or over the header");
    if (sz > kSectionLimits[kind])
      throw Error(name + " section is " + n_bytes(sz) + " long, more than the format's limit of " +
                  n_bytes(kSectionLimits[kind]));
    if (kind == kData && off % kDataAlign)
      throw Error("data section offset " + std::to_string(off) + " is not a multiple of 64");
    sec[kind] = Sec{off, sz, true};
  }
  for (uint32_t k = kMeta; k <= kData; ++k)
    if (!sec[k].present) throw Error(std::string(kSectionNames[k]) + " section is missing");
  // The sections follow the table in the order meta, graph, tensors, data, with only alignment padding
  // between them, and the file ends with the data section: every byte of the file is accounted for, so once
  // the tensors have sized the data section, they have sized the whole file.
  uint64_t pos = table_end;
  std::string prev = "section table";
  for (uint32_t k = kMeta; k <= kData; ++k) {
    const std::string name = kSectionNames[k];
    if (sec[k].off < pos)
      throw Error(name + " section (offset " + std::to_string(sec[k].off) + ") overlaps or comes before the " + prev +
                  " (which ends at byte " + std::to_string(pos) +
                  "); the sections follow the table in the order meta, graph, tensors, data");
    if (sec[k].off - pos > kMaxPadding)
      throw Error(std::to_string(sec[k].off - pos) + " unaccounted bytes between the " + prev + " and the " + name +
                  " section (at most " + std::to_string(kMaxPadding) + " bytes of alignment padding)");
    pos = sec[k].off + sec[k].size;
    prev = name + " section";
  }
  if (pos != size)
    throw Error(std::to_string(size - pos) + " unaccounted bytes after the data section (the file ends with it)");

  // Everything before the weights: header, table and the structure sections, at most ~84 MiB by the limits.
  const uint64_t d0 = sec[kData].off, d1 = sec[kData].off + sec[kData].size;
  std::vector<uint8_t> prefix(static_cast<size_t>(d0));
  file.read(0, prefix.size(), prefix.data());
  const uint8_t* data = prefix.data();
  if (std::memcmp(data, h, kHeaderSize) != 0) throw Error("the file changed while it was read");
  uint32_t crc = crc32(crc32(0, data, kCrcOffset), data + kHeaderSize, prefix.size() - kHeaderSize);

  // Meta: input shape and extra state.
  Reader mr(data + sec[kMeta].off, sec[kMeta].size, "meta");
  Shape input_shape = mr.shape("input shape");
  if (input_shape.empty()) mr.fail("the input shape has no batch dimension");
  Model::ExtraState extra;
  std::set<std::string> extra_names;
  for (uint32_t i = 0, n = mr.count("extra state entries", kMaxValues, 12); i < n; ++i) {
    std::string name = mr.str("extra state name");
    if (name.empty() || !extra_names.insert(name).second)
      mr.fail("extra state name '" + name + "' is empty or repeated");
    extra.push_back({name, mr.i64("extra state value")});
  }
  mr.end();

  // Graph: values, nodes, inputs, outputs.
  Reader gr(data + sec[kGraph].off, sec[kGraph].size, "graph");
  Graph src;
  const uint32_t nv = gr.count("values", kMaxValues, 10);
  src.values.resize(nv);
  std::set<std::string> param_names;
  for (uint32_t i = 0; i < nv; ++i) {
    Value& v = src.values[i];
    const std::string what = "value " + std::to_string(i);
    uint8_t kind = gr.u8(what + " kind"), dtype = gr.u8(what + " dtype");
    if (kind > uint8_t(ValueKind::Intermediate)) gr.fail(what + ": unknown kind " + std::to_string(kind));
    if (dtype > uint8_t(DType::s8)) gr.fail(what + ": unknown dtype " + std::to_string(dtype));
    v.kind = ValueKind(kind);
    v.desc.dtype = DType(dtype);
    v.name = gr.str(what + " name");
    v.desc.shape = gr.shape(what + " ('" + v.name + "')");
    if (v.kind == ValueKind::Input) src.inputs.push_back(int(i));
    if (v.kind == ValueKind::Param || v.kind == ValueKind::Buffer) {
      if (!param_names.insert(v.name).second) gr.fail("parameter '" + v.name + "' is declared twice");
      src.params.push_back(int(i));
    }
  }
  const uint32_t nn = gr.count("nodes", kMaxValues, 24);
  src.nodes.resize(nn);
  for (uint32_t i = 0; i < nn; ++i) {
    Node& n = src.nodes[i];
    std::string what = "node " + std::to_string(i);
    n.op = gr.str(what + " op");
    n.name = gr.str(what + " name");
    what = "node " + std::to_string(i) + " ('" + n.name + "')";
    if (!has_op(n.op)) gr.fail(what + ": unknown op '" + n.op + "'");
    const uint32_t ni = gr.count("integer attributes of " + what, kMaxAttrs, 8);
    for (uint32_t a = 0; a < ni; ++a) {
      std::string key = gr.str(what + " attribute name");
      uint32_t len = gr.count("integers in attribute '" + key + "' of " + what, kMaxAttrLen, 8);
      std::vector<int64_t> vals(len);
      for (auto& x : vals) {
        x = gr.i64("attribute '" + key + "'");
        if (x > kMaxDim || x < -kMaxDim)
          gr.fail(what + ": attribute '" + key + "' value " + std::to_string(x) + " is out of range");
      }
      if (!n.attrs.ints.emplace(key, std::move(vals)).second) gr.fail(what + ": attribute '" + key + "' appears twice");
    }
    const uint32_t nf = gr.count("float attributes of " + what, kMaxAttrs - ni, 12);
    for (uint32_t a = 0; a < nf; ++a) {
      std::string key = gr.str(what + " attribute name");
      double x = gr.f64("attribute '" + key + "'");
      if (n.attrs.ints.count(key) || !n.attrs.floats.emplace(key, x).second)
        gr.fail(what + ": attribute '" + key + "' appears twice");
    }
    n.inputs = gr.ids("input", kMaxNodeIO, nv, what);
    n.outputs = gr.ids("output", kMaxNodeIO, nv, what);
    for (int o : n.outputs) {
      Value& v = src.values[o];
      if (v.kind != ValueKind::Intermediate)
        gr.fail(what + " outputs value " + std::to_string(o) + ", which is a graph input or parameter");
      if (v.producer >= 0) gr.fail("value " + std::to_string(o) + " is produced by two nodes");
      v.producer = int(i);
    }
  }
  std::vector<int> graph_inputs = gr.ids("input", kMaxNodeIO, nv, "the graph");
  src.outputs = gr.ids("output", kMaxNodeIO, nv, "the graph");
  gr.end();
  if (graph_inputs != src.inputs) gr.fail("the graph input list does not match the input values");
  if (src.inputs.size() != 1)
    gr.fail("the graph has " + std::to_string(src.inputs.size()) + " inputs (a model takes exactly one)");
  if (src.outputs.size() != 1)
    gr.fail("the graph has " + std::to_string(src.outputs.size()) + " outputs (a model gives exactly one)");
  if (src.values[src.inputs[0]].desc.shape != input_shape)
    gr.fail("the graph input is " + shape_str(src.values[src.inputs[0]].desc.shape) +
            " but the model's input shape is " + shape_str(input_shape));

  // Shape inference, node by node (the op's own errors surface here).
  Graph g = replay(src, {input_shape}, true);

  // Tensors: names, shapes, data ranges.
  Reader tr(data + sec[kTensors].off, sec[kTensors].size, "tensors");
  const uint32_t nt = tr.count("tensors", kMaxValues, 25);
  std::vector<TensorRec> tensors(nt);
  std::map<std::string, size_t> by_name;
  std::vector<std::pair<uint64_t, size_t>> order;  // (data offset, tensor index)
  for (uint32_t i = 0; i < nt; ++i) {
    TensorRec& t = tensors[i];
    t.name = tr.str("tensor " + std::to_string(i) + " name");
    const std::string what = "tensor '" + t.name + "'";
    if (t.name.empty() || !by_name.emplace(t.name, i).second) tr.fail(what + " is unnamed or appears twice");
    if (extra_names.count(t.name)) tr.fail(what + " is also an extra state entry");
    uint8_t tf = tr.u8(what + " trainable flag");
    if (tf > 1) tr.fail(what + ": trainable flag " + std::to_string(tf) + " (0 or 1 expected)");
    t.trainable = tf == 1;
    t.shape = tr.shape(what);
    t.offset = tr.u64(what + " data offset");
    t.nbytes = tr.u64(what + " data size");
    if (t.nbytes != uint64_t(checked_numel(t.shape)) * 4)
      tr.fail(what + ": " + std::to_string(t.nbytes) + " data bytes for shape " + shape_str(t.shape) +
              " (float32 needs " + std::to_string(checked_numel(t.shape) * 4) + ")");
    if (t.offset % kDataAlign) tr.fail(what + ": data offset " + std::to_string(t.offset) + " is not a multiple of 64");
    if (t.offset < d0 || t.offset > d1 || t.nbytes > d1 - t.offset)
      tr.fail(what + ": data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
              ") lies outside the data section [" + std::to_string(d0) + ", " + std::to_string(d1) + ")");
    order.push_back({t.offset, i});
  }
  tr.end();
  std::sort(order.begin(), order.end());
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i].first < order[i - 1].first + tensors[order[i - 1].second].nbytes)
      tr.fail("tensor data ranges overlap");
  for (int p : g.params) {
    const Value& v = g.values[p];
    auto it = by_name.find(v.name);
    if (it == by_name.end()) tr.fail("the graph's parameter '" + v.name + "' has no tensor");
    const TensorRec& t = tensors[it->second];
    const bool trainable = v.kind == ValueKind::Param;
    if (t.shape != v.desc.shape || t.trainable != trainable)
      tr.fail("tensor '" + t.name + "' is " + shape_str(t.shape) + (t.trainable ? " trainable" : " non-trainable") +
              ", the graph expects " + shape_str(v.desc.shape) + (trainable ? " trainable" : " non-trainable"));
  }
  // The data section holds the tensors back to back (each at the next multiple of 64) and nothing else, so
  // its size, and with it the file's, is what the tensor table says; checked before any weight is read.
  // (Offsets are multiples of 64 and ranges do not overlap, so the last tensor ends at d0 + need or later,
  // and only there when every tensor sits at the next multiple of 64: this one comparison checks the layout.)
  uint64_t need = 0;  // no overflow: the ranges lie inside [d0, d1) without overlapping
  for (auto& o : order) need = align_up(need, kDataAlign) + tensors[o.second].nbytes;
  if (need != d1 - d0)
    throw Error("the data section is " + n_bytes(d1 - d0) + " long, but the " + std::to_string(nt) + " tensors take " +
                n_bytes(need) + " (the file size does not match its tensors)");
  const uint64_t memory = physical_memory_bytes();
  if (need > memory)
    throw Error("the weights take " + n_bytes(need) + ", more than this machine's memory (" + n_bytes(memory) + ")");

  // Everything but the checksum checked: allocate the weights and stream them in, computing the CRC-32.
  std::vector<ParamStore::Entry> entries;
  for (auto& t : tensors) entries.push_back({t.name, t.shape, t.trainable, 0});
  std::shared_ptr<ParamStore> store;
  try {
    store = std::make_shared<ParamStore>(entries);
  } catch (const std::bad_alloc&) {
    throw Error("cannot allocate the weights (" + n_bytes(need) + "): out of memory");
  } catch (const Error& e) {
    throw Error("cannot allocate the weights (" + n_bytes(need) + "): " + e.what());
  }
  uint64_t at = d0;
  for (auto& o : order) {
    const TensorRec& t = tensors[o.second];
    crc = crc_range(file, at, t.offset, crc);  // alignment padding
    uint8_t* dst = reinterpret_cast<uint8_t*>(store->data(store->find(t.name)));
    for (uint64_t done = 0; done < t.nbytes;) {
      const size_t k = size_t(std::min<uint64_t>(t.nbytes - done, kReadChunk));
      file.read(t.offset + done, k, dst + done);
      crc = crc32(crc, dst + done, k);
      done += k;
    }
    floats_from_le(reinterpret_cast<float*>(dst), size_t(t.nbytes / 4));
    at = t.offset + t.nbytes;
  }
  crc = crc_range(file, at, size, crc);  // nothing left: the layout checks put the data section last
  const uint32_t stored = load_le32(h + kCrcOffset);
  if (stored != crc)
    throw Error("checksum mismatch (stored " + hex32(stored) + ", computed " + hex32(crc) + "): the file is corrupted");
  return Model(std::move(g), std::move(store), std::move(input_shape), std::move(extra));
}

}  // namespace

Model decode(ByteSource& src, const std::string& origin) {
  try {
    return decode_impl(src);
  } catch (const Error& e) {
    throw Error("model file '" + origin + "': " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error("model file '" + origin + "': out of memory while loading it");
  } catch (const std::length_error&) {
    throw Error("model file '" + origin + "': out of memory while loading it (a container grew past its maximum size)");
  }
}

Model decode(const uint8_t* data, size_t size, const std::string& origin) {
  if (!data && size) throw Error("model file '" + origin + "': no data");
  MemorySource src(data, size);
  return decode(src, origin);
}

}  // namespace fmt
}  // namespace cnn
