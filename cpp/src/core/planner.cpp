#include "core/planner.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <utility>

namespace cnn {
namespace {

void check_alignment(size_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw std::invalid_argument("plan_memory: alignment must be a nonzero power of two, got " +
                                std::to_string(alignment));
}

void check_reqs(const std::vector<BufferReq>& reqs) {
  for (size_t i = 0; i < reqs.size(); ++i) {
    const BufferReq& r = reqs[i];
    if (r.first < 0 || r.last < 0)
      throw std::invalid_argument("plan_memory: buffer " + std::to_string(i) + " has a negative step");
    if (r.first > r.last)
      throw std::invalid_argument("plan_memory: buffer " + std::to_string(i) + " has first " + std::to_string(r.first) +
                                  " > last " + std::to_string(r.last));
  }
}

size_t align_up(size_t n, size_t alignment) {
  if (n > std::numeric_limits<size_t>::max() - (alignment - 1))
    throw std::invalid_argument("plan_memory: size " + std::to_string(n) + " overflows when aligned");
  return (n + alignment - 1) & ~(alignment - 1);
}

bool lifetimes_overlap(const BufferReq& a, const BufferReq& b) { return a.first <= b.last && b.first <= a.last; }

size_t peak_live(const std::vector<BufferReq>& reqs, const std::vector<size_t>& sizes) {
  std::vector<std::pair<int64_t, int64_t>> events;  // (step, signed size); ends take effect at last + 1
  events.reserve(2 * reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    events.emplace_back(reqs[i].first, static_cast<int64_t>(sizes[i]));
    events.emplace_back(static_cast<int64_t>(reqs[i].last) + 1, -static_cast<int64_t>(sizes[i]));
  }
  std::sort(events.begin(), events.end());
  int64_t live = 0, peak = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    live += events[i].second;
    if (i + 1 == events.size() || events[i + 1].first != events[i].first) peak = std::max(peak, live);
  }
  return static_cast<size_t>(peak);
}

}  // namespace

MemoryPlan plan_memory(const std::vector<BufferReq>& reqs, size_t alignment, bool enabled) {
  check_alignment(alignment);
  check_reqs(reqs);
  const size_t n = reqs.size();
  std::vector<size_t> sizes(n);
  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    sizes[i] = align_up(reqs[i].size, alignment);
    plan.naive_sum += sizes[i];
  }
  plan.lower_bound = peak_live(reqs, sizes);

  if (!enabled) {
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      plan.offsets[i] = at;
      at += sizes[i];
    }
    plan.arena_bytes = at;
    return plan;
  }

  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (sizes[a] != sizes[b]) return sizes[a] > sizes[b];
    if (reqs[a].first != reqs[b].first) return reqs[a].first < reqs[b].first;
    return a < b;
  });

  std::vector<size_t> placed;  // indices, kept sorted by offset (then index)
  placed.reserve(n);
  for (size_t i : order) {
    const size_t size = sizes[i];
    size_t end = 0;
    size_t best = 0, best_gap = std::numeric_limits<size_t>::max();
    bool found = false;
    for (size_t j : placed) {
      if (!lifetimes_overlap(reqs[i], reqs[j])) continue;
      const size_t off = plan.offsets[j];
      if (off >= end) {
        const size_t gap = off - end;
        if (gap >= size && gap < best_gap) {
          best = end;
          best_gap = gap;
          found = true;
        }
      }
      end = std::max(end, off + sizes[j]);
    }
    plan.offsets[i] = found ? best : end;
    plan.arena_bytes = std::max(plan.arena_bytes, plan.offsets[i] + size);
    auto pos = std::upper_bound(placed.begin(), placed.end(), i, [&](size_t a, size_t b) {
      return plan.offsets[a] != plan.offsets[b] ? plan.offsets[a] < plan.offsets[b] : a < b;
    });
    placed.insert(pos, i);
  }
  return plan;
}

std::string validate_plan(const std::vector<BufferReq>& reqs, const MemoryPlan& plan, size_t alignment) {
  check_alignment(alignment);
  check_reqs(reqs);
  const size_t n = reqs.size();
  if (plan.offsets.size() != n)
    return "plan has " + std::to_string(plan.offsets.size()) + " offsets for " + std::to_string(n) + " buffers";
  std::vector<size_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    sizes[i] = align_up(reqs[i].size, alignment);
    const size_t off = plan.offsets[i];
    if (off % alignment != 0)
      return "buffer " + std::to_string(i) + " offset " + std::to_string(off) + " is not a multiple of " +
             std::to_string(alignment);
    if (off > plan.arena_bytes || sizes[i] > plan.arena_bytes - off)
      return "buffer " + std::to_string(i) + " [" + std::to_string(off) + ", " + std::to_string(off + sizes[i]) +
             ") exceeds arena of " + std::to_string(plan.arena_bytes) + " bytes";
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      if (sizes[i] == 0 || sizes[j] == 0 || !lifetimes_overlap(reqs[i], reqs[j])) continue;
      const size_t a = plan.offsets[i], b = plan.offsets[j];
      if (a < b + sizes[j] && b < a + sizes[i])
        return "buffers " + std::to_string(i) + " [" + std::to_string(a) + ", " + std::to_string(a + sizes[i]) +
               ") and " + std::to_string(j) + " [" + std::to_string(b) + ", " + std::to_string(b + sizes[j]) +
               ") are live together and overlap in memory";
    }
  }
  return "";
}

}  // namespace cnn
