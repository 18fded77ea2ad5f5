// The `reference` backend: every op's naive reference kernel (OpSchema::ref), in float32 or float64, plain
// layouts, host memory. The yardstick the fast backends are tested against (gradient checks run here in float64).
#include "core/backend.hpp"

namespace cnn {
namespace {

class ReferenceBackend : public HostBackend {
 public:
  ReferenceBackend() : HostBackend("reference") {}
  bool supports_compute(DType compute) const override { return compute == DType::f32 || compute == DType::f64; }
};

BackendRegistrar reg{std::make_shared<ReferenceBackend>()};

}  // namespace
}  // namespace cnn
