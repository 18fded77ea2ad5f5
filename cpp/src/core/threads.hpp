// Process-wide thread count. OpenMP's thread-count setting (omp_set_num_threads) belongs to the calling thread
// only; cnnnative's set_num_threads is meant for the whole process, so it records the count here and every entry
// point that runs parallel code (Session construction, Session::run) applies it to its own thread first.
//
// Auto mode (no set_num_threads, no OMP_NUM_THREADS): the count follows the load of the machine. A sample is the
// machine's runnable threads (/proc/loadavg's 4th field) minus this process's own (state R in
// /proc/self/task/*/stat), scaled to the CPUs this process may use; samples are taken at run starts, at most every
// 10 ms, and smoothed with an exponential moving average (time constant 0.4 s). The wanted count is the usable CPUs
// minus that load, rounded with hysteresis (it moves only when the free CPUs are >= 0.6 away from it), clamped to
// [1, OpenMP's default]. Without /proc there is no sample and no reduction.
#pragma once

namespace cnn {

struct ThreadChoice {
  int count = 1;           // threads a run started now should use
  bool automatic = false;  // from the load (auto mode); false: a fixed count
  double stable_s = 0;     // auto: seconds the wanted count has been what it is now
};

// The count a run should use now (auto mode: takes a load sample when the last one is >= 10 ms old).
ThreadChoice choose_num_threads();
// Sets the calling thread's OpenMP thread count to n (oneDNN reads it when it creates a primitive, native kernels
// when they open a parallel region).
void use_num_threads(int n);
// choose_num_threads() applied to the calling thread; returns the count.
int apply_num_threads();

}  // namespace cnn
