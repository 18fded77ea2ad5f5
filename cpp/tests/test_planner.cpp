// Standalone check of cnn::plan_memory / cnn::validate_plan:
//   g++ -std=c++17 -O2 -Icpp/src cpp/src/core/planner.cpp cpp/tests/test_planner.cpp -o /tmp/tp && /tmp/tp
#include "core/planner.hpp"

#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <vector>

using cnn::BufferReq;
using cnn::MemoryPlan;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

static void expect_plan(const std::vector<BufferReq>& reqs, size_t alignment, const std::vector<size_t>& offsets,
                        size_t arena, size_t lower, size_t naive) {
  MemoryPlan p = cnn::plan_memory(reqs, alignment);
  CHECK(p.offsets == offsets);
  CHECK(p.arena_bytes == arena);
  CHECK(p.lower_bound == lower);
  CHECK(p.naive_sum == naive);
  CHECK(cnn::validate_plan(reqs, p, alignment).empty());
}

template <class F>
static bool throws_invalid(F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

int main() {
  // TFLite-like: sizes 10..50, alignment 1; the plan reaches the lower bound.
  expect_plan({{10, 0, 2}, {20, 1, 3}, {30, 2, 4}, {40, 0, 1}, {50, 3, 5}}, 1, {40, 80, 50, 0, 0}, 100, 100, 150);
  // Best fit: the 20-byte buffer takes the 25-byte hole at 125, not the 50-byte hole at 0.
  expect_plan({{50, 0, 0}, {45, 0, 5}, {30, 0, 5}, {25, 0, 0}, {24, 0, 5}, {20, 3, 5}}, 1, {0, 50, 95, 125, 150, 125},
              174, 174, 194);
  // All live at step 2: no reuse possible; equal aligned sizes go by earlier first.
  expect_plan({{100, 0, 3}, {3, 1, 2}, {64, 2, 5}, {1, 0, 2}}, 64, {0, 192, 256, 128}, 320, 320, 320);
  // Chain: each buffer dies one step after the next is born, so two slots alternate.
  expect_plan({{64, 0, 1}, {64, 1, 2}, {64, 2, 3}, {64, 3, 4}}, 64, {0, 64, 0, 64}, 128, 128, 256);
  // Zero sizes and empty input.
  expect_plan({{0, 0, 0}, {1, 0, 0}, {0, 0, 1}}, 64, {0, 0, 0}, 64, 64, 64);
  expect_plan({}, 64, {}, 0, 0, 0);

  {
    std::vector<BufferReq> reqs = {{10, 0, 2}, {20, 1, 3}, {30, 2, 4}};
    MemoryPlan naive = cnn::plan_memory(reqs, 16, false);
    CHECK((naive.offsets == std::vector<size_t>{0, 16, 48}));
    CHECK(naive.arena_bytes == 80 && naive.naive_sum == 80 && naive.lower_bound == 80);
    CHECK(cnn::validate_plan(reqs, naive, 16).empty());

    MemoryPlan bad = naive;
    bad.offsets = {0, 16, 32};
    CHECK(cnn::validate_plan(reqs, bad, 16).find("buffers 1") == 0);
    bad.offsets = {0, 16, 40};
    CHECK(cnn::validate_plan(reqs, bad, 16).find("buffer 2") == 0);
    bad.offsets = {0, 16, 64};
    CHECK(cnn::validate_plan(reqs, bad, 16).find("exceeds arena") != std::string::npos);
  }

  CHECK(throws_invalid([] { cnn::plan_memory({{1, 2, 1}}); }));
  CHECK(throws_invalid([] { cnn::plan_memory({{1, -1, 1}}); }));
  CHECK(throws_invalid([] { cnn::plan_memory({{1, 0, 1}}, 0); }));
  CHECK(throws_invalid([] { cnn::plan_memory({{1, 0, 1}}, 48); }));

  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t alignment = size_t{1} << (rng() % 8);
    const int n = static_cast<int>(rng() % 40);
    const int steps = 1 + static_cast<int>(rng() % 30);
    std::vector<BufferReq> reqs;
    for (int i = 0; i < n; ++i) {
      int a = static_cast<int>(rng() % steps), b = static_cast<int>(rng() % steps);
      if (a > b) std::swap(a, b);
      reqs.push_back({static_cast<size_t>(rng() % 5000), a, b});
    }
    MemoryPlan p = cnn::plan_memory(reqs, alignment);
    CHECK(cnn::validate_plan(reqs, p, alignment).empty());
    CHECK(p.lower_bound <= p.arena_bytes && p.arena_bytes <= p.naive_sum);
    for (size_t off : p.offsets) CHECK(off % alignment == 0);
    MemoryPlan q = cnn::plan_memory(reqs, alignment);
    CHECK(q.offsets == p.offsets && q.arena_bytes == p.arena_bytes);
    MemoryPlan naive = cnn::plan_memory(reqs, alignment, false);
    CHECK(cnn::validate_plan(reqs, naive, alignment).empty());
    CHECK(naive.arena_bytes == p.naive_sum && naive.lower_bound == p.lower_bound);
  }

  std::puts("test_planner: all checks passed");
  return 0;
}
