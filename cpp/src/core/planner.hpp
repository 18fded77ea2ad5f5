// Memory planner: a pure function from buffer lifetimes to offsets in one arena.
//
// Owns: the placement of intermediate buffers; it allocates nothing and knows nothing of tensors.
// Algorithm (greedy by size, best fit; Pisarchyk & Lee 2020, as in TensorFlow Lite):
//   sizes are rounded up to `alignment`; requests are visited by aligned size descending
//   (ties: smaller `first`, then smaller index); each goes into the smallest gap, among the
//   already-placed buffers whose lifetimes overlap its own, that fits it, else after the last of them.
//   enabled=false lays buffers end to end in index order (no reuse).
// Promises: pure and deterministic (same input, same plan), no I/O, no global state; every offset
//   is a multiple of `alignment`; buffers live at a common step never share bytes.
// Errors: std::invalid_argument for first > last, a negative step, or an alignment that is 0 or
//   not a power of two.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace cnn {

struct BufferReq {
  size_t size;  // bytes, 0 allowed
  int first;    // live on schedule steps [first, last], inclusive
  int last;
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // one per request, each a multiple of alignment
  size_t arena_bytes = 0;       // max(offset + aligned size)
  size_t lower_bound = 0;       // max over steps of the aligned sizes live at that step
  size_t naive_sum = 0;         // sum of aligned sizes (no reuse)
};

MemoryPlan plan_memory(const std::vector<BufferReq>& reqs, size_t alignment = 64, bool enabled = true);

// "" when the plan is sound; otherwise a message naming the first offending buffer or pair.
std::string validate_plan(const std::vector<BufferReq>& reqs, const MemoryPlan& plan, size_t alignment = 64);

}  // namespace cnn
