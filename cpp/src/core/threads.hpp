// Process-wide thread count. OpenMP's thread-count setting (omp_set_num_threads) belongs to the calling thread
// only; cnnnative's set_num_threads is meant for the whole process, so it records the count here and every entry
// point that runs parallel code (Session construction, Session::run) applies it to its own thread first.
#pragma once

namespace cnn {

// Sets the calling thread's OpenMP thread count to the one set_num_threads() configured (unchanged when never
// set); returns the count now in effect for this thread.
int apply_num_threads();

}  // namespace cnn
