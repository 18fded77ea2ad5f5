// Counted, aligned allocation: every buffer the core owns (arena, parameters, gradients, optimizer
// state, scratch) goes through here, so tests can prove a step allocates nothing.
#pragma once
#include <cstddef>
#include <memory>

namespace cnn {
void* counted_alloc(size_t bytes, size_t alignment = 64);  // zero-filled; never returns null (throws Error)
void counted_free(void* p);
// A backend that allocates its own memory (device memory, pinned host memory) counts each allocation here, so
// allocation_count() covers it too.
void count_allocation();

// A buffer owns its memory through the release function of whoever allocated it: counted host memory here, a
// backend's device memory elsewhere (Backend::allocate).
struct BufferDeleter {
  void (*release)(void*) = counted_free;
  void operator()(void* p) const {
    if (p) release(p);
  }
};
using Buffer = std::unique_ptr<void, BufferDeleter>;
inline Buffer make_buffer(size_t bytes) { return Buffer(counted_alloc(bytes)); }
}  // namespace cnn
