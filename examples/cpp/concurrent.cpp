// concurrent: several threads serving one loaded model. Every thread builds its own InferenceSession on the
// same cnn::Model, so all of them read one copy of the weights (the Model's ParamStore), and runs it
// repeatedly on its own input; each result must equal, bit for bit, a single-threaded run of that input.
// Then all threads share ONE InferenceSession (its runs are serialized by the session's lock, each thread
// getting its own output), and a worker thread checks that cnn::set_num_threads, called here in main(),
// applies to it too.
//   concurrent MODEL.cnn [THREADS=4] [RUNS=20] [BATCH=2]
// Then zeroes the model's trainable weights and checks an existing session sees it (the weights are shared).
// Prints a summary and exits 0 when every result matched and the weights are shared, 1 otherwise.
#include <cnnnative/model.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.cnn [THREADS] [RUNS] [BATCH]\n", argv[0]);
    return 2;
  }
  const int threads = argc > 2 ? std::atoi(argv[2]) : 4, runs = argc > 3 ? std::atoi(argv[3]) : 20;
  const int64_t batch = argc > 4 ? std::atoll(argv[4]) : 2;
  try {
    const cnn::Model model = cnn::load_model(argv[1]);
    // One input per thread (a fixed pseudo-random pattern) and its single-threaded reference output.
    std::vector<std::vector<float>> inputs(threads), expected(threads);
    {
      cnn::InferenceSession ref(model, batch);
      for (int t = 0; t < threads; ++t) {
        uint64_t s = 0x9E3779B97F4A7C15ull * uint64_t(t + 1);
        inputs[t].resize(size_t(ref.input_size()));
        for (auto& v : inputs[t]) {
          s = s * 6364136223846793005ull + 1442695040888963407ull;
          v = float(int64_t(s >> 40) % 2001 - 1000) / 1000.0f;
        }
        expected[t] = ref.run(inputs[t]);
      }
    }
    std::atomic<int> mismatches{0}, done{0}, failures{0}, ready{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        try {
          cnn::InferenceSession s(model, batch);  // shares model's weights
          std::vector<float> out(size_t(s.output_size()));
          for (++ready; ready.load() < threads;) std::this_thread::yield();  // start the runs together
          for (int r = 0; r < runs; ++r) {
            s.run(inputs[t].data(), out.data());
            if (std::memcmp(out.data(), expected[t].data(), out.size() * sizeof(float)) != 0) ++mismatches;
            ++done;
          }
        } catch (const cnn::Error& e) {
          std::fprintf(stderr, "concurrent: thread %d: %s\n", t, e.what());
          ++failures;
          ++ready;
        }
      });
    for (auto& th : pool) th.join();
    std::printf("threads=%d runs=%d batch=%lld: %d results, %d differ from the single-threaded run, %d thread errors\n",
                threads, runs, (long long)batch, done.load(), mismatches.load(), failures.load());

    // One session, all threads: each run must still return that thread's own result.
    std::atomic<int> shared_mismatches{0}, shared_done{0};
    {
      cnn::InferenceSession one(model, batch);
      std::vector<std::thread> users;
      for (int t = 0; t < threads; ++t)
        users.emplace_back([&, t] {
          std::vector<float> out(size_t(one.output_size()));
          for (int r = 0; r < runs; ++r) {
            one.run(inputs[t].data(), out.data());
            if (std::memcmp(out.data(), expected[t].data(), out.size() * sizeof(float)) != 0) ++shared_mismatches;
            ++shared_done;
          }
        });
      for (auto& th : users) th.join();
    }
    std::printf("one shared session: %d results, %d differ from the single-threaded run\n", shared_done.load(),
                shared_mismatches.load());

    // set_num_threads is process-wide: a thread started afterwards sees the count set here.
    const int before = cnn::get_num_threads();
    cnn::set_num_threads(1);
    int seen = 0;
    std::thread([&] { seen = cnn::get_num_threads(); }).join();
    cnn::set_num_threads(before);
    std::printf("set_num_threads(1) seen by another thread: %s\n", seen == 1 ? "yes" : "no");

    // Sessions read the Model's weights in place: scaling them all by 0 must change an existing session's
    // output to the zero-weight model's (a conv/linear/BN/pool/add/ReLU network then outputs zeros).
    cnn::InferenceSession probe(model, batch);
    cnn::ParamStore& store = *model.params();
    for (size_t i = 0; i < store.num_params(); ++i) store.params()[i] = 0.0f;
    std::vector<float> zero = probe.run(inputs[0]);
    bool shared = true;
    for (float v : zero) shared = shared && v == 0.0f;
    std::printf("weights shared: %s\n", shared ? "yes" : "no");
    return mismatches == 0 && failures == 0 && done == threads * runs && shared && shared_mismatches == 0 &&
                   shared_done == threads * runs && seen == 1
               ? 0
               : 1;
  } catch (const cnn::Error& e) {
    std::fprintf(stderr, "concurrent: %s\n", e.what());
    return 1;
  }
}
