// Dropout's mask RNG, shared by the reference and CPU kernels so both draw identical masks. Counter-based:
// element i of node `name` at run `step` of a session seeded `seed` keeps its value iff
// hash(seed, step, name, i) >= p (53-bit uniform). No state, so masks do not depend on thread count,
// differ per step and per node, and repeat for the same (seed, step, name).
#pragma once
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "core/op.hpp"

namespace cnn {
namespace dropout {

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;

inline uint64_t mix64(uint64_t z) {  // splitmix64 finalizer: a bijection with full avalanche
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t name_hash(const std::string& s) {  // FNV-1a
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// One key per (seed, step, node); element i draws mix64(key + (i + 1) * kGamma).
inline uint64_t stream_key(uint64_t seed, int64_t step, const std::string& node_name) {
  uint64_t k = mix64(seed ^ 0x6a09e667f3bcc909ull);
  k = mix64(k ^ name_hash(node_name));
  return mix64(k ^ uint64_t(step));
}

// Elements whose 53-bit draw is below this are dropped: ceil(p * 2^53).
inline uint64_t drop_threshold(double p) { return uint64_t(std::ceil(p * 9007199254740992.0)); }

inline uint8_t keep(uint64_t key, int64_t i, uint64_t threshold) {
  return uint8_t((mix64(key + uint64_t(i + 1) * kGamma) >> 11) >= threshold);
}

// Attribute p (default 0.5, as torch.nn.Dropout), validated to [0, 1).
inline double read_p(const Node& n) {
  double p = 0.5;
  if (n.attrs.floats.count("p"))
    p = n.attrs.floats.at("p");
  else if (n.attrs.ints.count("p"))
    p = double(n.attrs.i("p"));
  if (!(p >= 0.0 && p < 1.0)) {
    std::ostringstream o;
    o << "p must be in [0, 1), got " << p;
    op_error(n, o.str());
  }
  return p;
}

}  // namespace dropout
}  // namespace cnn
