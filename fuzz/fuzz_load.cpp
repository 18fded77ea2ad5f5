// libFuzzer harness for the model loader. Each input goes to cnn::Model::from_bytes twice: as given (the
// header and checksum checks) and with its size field and CRC-32 repaired (so mutations reach the section,
// graph and tensor parsers and shape inference). Contract under test: an input loads or throws cnn::Error;
// any other exception, crash, sanitizer report, leak or allocation past -rss_limit_mb is a finding. A model
// that loads must also re-encode to bytes that load and re-encode identically, and rebatch or throw Error.
// Built by fuzz/run.sh from the core sources the loader needs (no oneDNN, no kernels, no sessions).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <cnnnative/model.hpp>

#include "core/serialize.hpp"

extern "C" void omp_set_num_threads(int) {}
extern "C" int omp_get_max_threads(void) { return 1; }

namespace {

void attempt(const uint8_t* data, size_t size) {
  try {
    cnn::Model m = cnn::Model::from_bytes(data, size);
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
