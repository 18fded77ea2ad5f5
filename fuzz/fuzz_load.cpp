// libFuzzer harness for the model loader. Each input goes to cnn::fmt::decode twice: as given (the header
// checks) and with its size field and CRC-32 repaired (so mutations reach the section, graph and tensor
// parsers and shape inference). Contract under test: an input loads or throws cnn::Error; any other
// exception, crash, sanitizer report, leak or allocation past -rss_limit_mb is a finding, and so is a read
// outside [0, size). A model that loads must also re-encode to bytes that load (Model::from_bytes) and
// re-encode identically, rebatch or throw Error, and fail with Error when its bytes stop short of the end
// while being read (a file that shrinks under the loader: decode reads every byte before it returns).
// Built by fuzz/run.sh from the core sources the loader needs (no oneDNN, no kernels, no sessions).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cnnnative/model.hpp>

#include "core/serialize.hpp"

extern "C" void omp_set_num_threads(int) {}
extern "C" int omp_get_max_threads(void) { return 1; }

namespace {

// The input as a ByteSource that aborts on a read outside it, and throws Error (as a file that shrank
// does) on a read past `cut`.
class FuzzSource final : public cnn::fmt::ByteSource {
 public:
  FuzzSource(const uint8_t* data, size_t size, size_t cut) : data_(data), size_(size), cut_(cut) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, size_t n, uint8_t* dst) override {
    if (offset > size_ || n > size_ - offset) std::abort();
    if (offset + n > cut_) throw cnn::Error("the file shrank while it was read");
    if (n) std::memcpy(dst, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
  size_t size_, cut_;
};

void attempt(const uint8_t* data, size_t size) {
  try {
    FuzzSource src(data, size, size);
    cnn::Model m = cnn::fmt::decode(src, "<fuzz>");
    if (size) {
      FuzzSource shrinking(data, size, size_t(uint64_t(size) * data[size / 2] / 256));
      try {
        cnn::fmt::decode(shrinking, "<fuzz>");
        std::abort();  // loaded without reading its last bytes
      } catch (const cnn::Error&) {
      }
    }
    std::vector<uint8_t> b = m.to_bytes();
    cnn::Model again = cnn::Model::from_bytes(b.data(), b.size());
    if (again.to_bytes() != b) std::abort();  // encode(decode(x)) must be a fixed point
    try {
      cnn::rebatch(m.graph(), 3);
    } catch (const cnn::Error&) {
    }
  } catch (const cnn::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attempt(data, size);
  if (size >= cnn::fmt::kHeaderSize) {
    std::vector<uint8_t> b(data, data + size);
    for (int i = 0; i < 8; ++i) b[16 + i] = uint8_t(uint64_t(size) >> (8 * i));
    uint32_t crc = cnn::fmt::file_crc(b.data(), b.size());
    for (int i = 0; i < 4; ++i) b[cnn::fmt::kCrcOffset + i] = uint8_t(crc >> (8 * i));
    attempt(b.data(), b.size());
  }
  return 0;
}
