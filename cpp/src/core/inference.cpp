// InferenceSession: a Model's graph rebatched to one batch size and compiled in inference mode. Owns its
// Session (arena, scratch, kernels); borrows the Model's ParamStore through the shared_ptr, so sessions on
// one Model share the weights and may outlive it. Thread safety: each session has its own arena and kernels
// and weights are only read in inference mode, so sessions run in parallel; one session used from several
// threads serializes its runs on its lock, held here across the run and the copy of its output.
#include <cstring>

#include <cnnnative/model.hpp>

namespace cnn {

InferenceSession::InferenceSession(const Model& model, int64_t batch) : InferenceSession(model, batch, "cpu") {}

InferenceSession::InferenceSession(const Model& model, int64_t batch, const std::string& device) {
  if (batch < 1) throw Error("InferenceSession: the batch size must be >= 1, got " + std::to_string(batch));
  if (device != "cpu" && device != "cuda")
    throw Error("InferenceSession: device must be \"cpu\" or \"cuda\", got \"" + device + "\"");
  CompileOptions o;
  o.mode = Mode::Infer;
  o.backend = device;  // "cuda": the plugin libcnnnative_cuda.so beside libcnnnative, loaded now
  s_ = std::make_unique<Session>(rebatch(model.graph(), batch), model.params(), o);
  in_ = s_->feeds().at(0).desc.shape;
  out_ = s_->fetches().at(0).desc.shape;
}
InferenceSession::~InferenceSession() = default;
InferenceSession::InferenceSession(InferenceSession&&) noexcept = default;
InferenceSession& InferenceSession::operator=(InferenceSession&&) noexcept = default;

void InferenceSession::run(const float* input, float* output) {
  if (!s_) throw Error("InferenceSession: used after being moved from");
  if (!input || !output) throw Error("InferenceSession::run: null input or output pointer");
  auto hold = s_->lock();  // this run's output, even when other threads share the session
  s_->run({input});
  std::memcpy(output, s_->fetch(0), size_t(numel(out_)) * sizeof(float));
}

std::vector<float> InferenceSession::run(const std::vector<float>& input) {
  if (int64_t(input.size()) != input_size())
    throw Error("InferenceSession::run: expected " + std::to_string(input_size()) + " floats for input " +
                shape_str(in_) + ", got " + std::to_string(input.size()));
  std::vector<float> out(static_cast<size_t>(output_size()));
  run(input.data(), out.data());
  return out;
}

}  // namespace cnn
