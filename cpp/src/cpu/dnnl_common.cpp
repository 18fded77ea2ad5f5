#include "cpu/dnnl_common.hpp"

namespace cnn {
namespace cpu {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
// One stream per calling thread: oneDNN streams are not thread-safe, and sessions may run concurrently.
dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::dims dims_of(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }

dnnl::memory::data_type dt_of(DType t) {
  switch (t) {
    case DType::f32: return dnnl::memory::data_type::f32;
    case DType::bf16: return dnnl::memory::data_type::bf16;
    case DType::i32: return dnnl::memory::data_type::s32;
    case DType::u8: return dnnl::memory::data_type::u8;
    default: throw Error(std::string("oneDNN kernels do not take ") + dtype_name(t));
  }
}

dnnl::memory::desc plain_desc(const Shape& s, DType t) {
  dnnl::memory::dims d = dims_of(s);
  dnnl::memory::dims strides(d.size(), 1);
  for (int i = int(d.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * d[i + 1];
  return dnnl::memory::desc(d, dt_of(t), strides);
}
dnnl::memory::desc plain_desc(const TensorDesc& d) { return plain_desc(d.shape, d.dtype); }

void DnnlExec::bind(int arg, const dnnl::memory::desc& md, Src src) {
  dnnl::memory m(md, engine(), DNNL_MEMORY_NONE);
  args_[arg] = m;
  handles_.push_back({m, src});
}

void DnnlExec::run(const RunCtx& ctx) {
  for (auto& h : handles_) {
    void* p = h.second.kind == Src::In    ? ctx.in[h.second.index]
              : h.second.kind == Src::Out ? ctx.out[h.second.index]
                                          : static_cast<char*>(ctx.scratch) + h.second.offset;
    h.first.set_data_handle(p);
  }
  prim_.execute(stream(), args_);
}

dnnl::primitive_attr user_scratchpad_attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

}  // namespace cpu
}  // namespace cnn
