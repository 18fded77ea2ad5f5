// cnnnative models for embedders. Owns: cnn::Model (an inference graph, the ParamStore holding its weights
// and the input shape it was traced with), the native model file (.cnn: save/load, layout in docs/cpp.md),
// rebatching, and InferenceSession (a Session for one batch size behind a float-pointer API).
// Promises: no oneDNN types here; a malformed file raises cnn::Error (never a crash, never an allocation
// larger than the file justifies) and loading validates the structure and sizes before it allocates the
// weights (the checksum is verified as they are read);
// several InferenceSessions on one Model share its weights (the ParamStore) and may run concurrently,
// one session per thread.
#pragma once
#include <cnnnative/cnnnative.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cnn {

// Version of the .cnn format this build writes; it reads exactly this version.
constexpr uint32_t kModelFormatVersion = 1;

// A model ready to run: a graph with one float32 input and one output, traced for inference, the
// parameter store it reads, and the input shape [N, C, ...] it was traced with. Copies share the store.
class Model {
 public:
  // Named int64 scalars that belong to the model's state_dict but not to the ParamStore
  // (BatchNorm's num_batches_tracked).
  using ExtraState = std::vector<std::pair<std::string, int64_t>>;

  // Checks the pieces fit together: one float32 input of shape input_shape, one output, every graph
  // parameter in the store with its shape and trainable flag. Throws Error otherwise.
  Model(Graph graph, std::shared_ptr<ParamStore> params, Shape input_shape, ExtraState extra_state = {});

  static Model load(const std::string& path);              // = load_model(path)
  static Model from_bytes(const void* data, size_t size);  // a .cnn file held in memory
  void save(const std::string& path) const;                // = save_model(*this, path)
  std::vector<uint8_t> to_bytes() const;                   // the .cnn file, in memory

  const Graph& graph() const { return graph_; }
  const std::shared_ptr<ParamStore>& params() const { return params_; }
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const;
  const ExtraState& extra_state() const { return extra_; }

 private:
  Graph graph_;
  std::shared_ptr<ParamStore> params_;
  Shape input_shape_;
  ExtraState extra_;
};

// Reads and validates a .cnn file. Every problem (missing, truncated, corrupted, hostile or inconsistent
// file) is one Error: "model file 'PATH': WHAT". Shape inference re-runs on the stored graph, so an
// inconsistent graph fails with the op's own message.
Model load_model(const std::string& path);
// Writes atomically: a temporary file in the same folder, flushed, then renamed over `path`. On failure
// `path` is left as it was and no temporary file remains; a successful save also removes temporaries that
// killed saves of the same path left behind.
void save_model(const Model& model, const std::string& path);

// The graph replayed with every input's first (batch) dimension set to `batch`; shape inference re-runs. Sizes
// traced at the old batch follow the new one where they are the batch (a reshape's target such as [N, -1] or
// [N, C, H*W], a slice keeping the whole batch); a node whose output would not follow the batch (a constant or
// another attribute sized from the traced batch) is refused with an Error naming it.
Graph rebatch(const Graph& graph, int64_t batch);

// Inference for one batch size. Reads the Model's weights in place (shares its ParamStore; it may outlive
// the Model). One session may be used from several threads: its runs are serialized on its lock (for throughput
// give each thread its own session).
class InferenceSession {
 public:
  InferenceSession(const Model& model, int64_t batch);
  // device: "cpu" or "cuda" (an NVIDIA GPU through the cuda backend plugin, cuDNN and cuBLAS; throws Error saying
  // what is missing on a machine without them). Input and output stay host memory either way.
  InferenceSession(const Model& model, int64_t batch, const std::string& device);
  ~InferenceSession();
  InferenceSession(const InferenceSession&) = delete;
  InferenceSession& operator=(const InferenceSession&) = delete;
  InferenceSession(InferenceSession&&) noexcept;
  InferenceSession& operator=(InferenceSession&&) noexcept;

  // input: numel(input_shape()) floats, NCHW, C-contiguous; output: numel(output_shape()) floats.
  void run(const float* input, float* output);
  std::vector<float> run(const std::vector<float>& input);  // checks the size
  const Shape& input_shape() const { return in_; }
  const Shape& output_shape() const { return out_; }
  int64_t input_size() const { return numel(in_); }
  int64_t output_size() const { return numel(out_); }

 private:
  std::unique_ptr<Session> s_;
  Shape in_, out_;
};

}  // namespace cnn
