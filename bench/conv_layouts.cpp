// Activation-layout study for the CPU fast path: times oneDNN convolutions forward, backward-data and
// backward-weights with plain nchw, channels-last nhwc and oneDNN-chosen (format_tag::any) activations.
// Weights are format_tag::any in every case (the engine reorders the plain parameter into the kernel's
// scratch). Problems are benchdnn-style names. Build and run (prints a markdown table):
//
//   D=<the prefix whose include/ holds dnnl.hpp: where the onednn-devel-cpu-gomp wheel installed, e.g. sys.prefix>
//   g++ -O2 -std=c++17 bench/conv_layouts.cpp -I$D/include -L$D/lib -ldnnl -Wl,-rpath,$D/lib -o /tmp/conv_layouts
//   OMP_NUM_THREADS=2 /tmp/conv_layouts [reps]
#include <dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Problem {
  const char* name;
  int64_t mb, ic, ih, oc, kh, stride, pad;
};

static engine eng(engine::kind::cpu, 0);
static stream strm(eng);

template <class F>
std::pair<double, double> min_median_ms(F&& f, int reps) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    strm.wait();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t[0], t[t.size() / 2]};
}

memory make(const memory::desc& md) {
  memory m(md, eng);
  float* p = static_cast<float*>(m.get_data_handle());
  for (size_t i = 0; i < md.get_size() / 4; ++i) p[i] = float((i * 7 % 13) - 6) * 0.125f;
  return m;
}

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  std::vector<Problem> probs = {
      {"mb16ic64ih56oc64oh56kh3ph1", 16, 64, 56, 64, 3, 1, 1},     // resnet50 layer1 3x3
      {"mb16ic256ih56oc64oh56kh1ph0", 16, 256, 56, 64, 1, 1, 0},   // resnet50 layer1 1x1 reduce
      {"mb16ic64ih56oc256oh56kh1ph0", 16, 64, 56, 256, 1, 1, 0},   // resnet50 layer1 1x1 expand
      {"mb16ic128ih28oc128oh28kh3ph1", 16, 128, 28, 128, 3, 1, 1}, // resnet50 layer2 3x3
      {"mb16ic512ih7oc512oh7kh3ph1", 16, 512, 7, 512, 3, 1, 1},    // resnet50 layer4 3x3
      {"mb64ic1ih28oc6oh28kh5ph2", 64, 1, 28, 6, 5, 1, 2},         // lenet conv1
      {"mb64ic6ih14oc16oh10kh5ph0", 64, 6, 14, 16, 5, 1, 0},       // lenet conv2
  };
  const char* dirs[] = {"fwd", "bwd_d", "bwd_w"};
  std::printf("| problem | dir | layout | impl | ms min | ms median | GFLOP/s (min) |\n|---|---|---|---|---|---|---|\n");
  for (auto& p : probs) {
    int64_t oh = (p.ih + 2 * p.pad - p.kh) / p.stride + 1;
    double flops = 2.0 * p.mb * p.oc * oh * oh * p.ic * p.kh * p.kh;
    memory::dims sd{p.mb, p.ic, p.ih, p.ih}, wd{p.oc, p.ic, p.kh, p.kh}, dd{p.mb, p.oc, oh, oh};
    memory::dims st{p.stride, p.stride}, pad{p.pad, p.pad};
    for (int d = 0; d < 3; ++d) {
      for (tag t : {tag::nchw, tag::nhwc, tag::any}) {
        const char* tn = t == tag::nchw ? "nchw" : t == tag::nhwc ? "nhwc" : "any";
        memory::desc src(sd, dt::f32, t), dst(dd, dt::f32, t), w(wd, dt::f32, tag::any);
        primitive_attr attr;
        attr.set_scratchpad_mode(scratchpad_mode::user);
        convolution_forward::primitive_desc fpd(eng, prop_kind::forward_training, algorithm::convolution_direct, src, w,
                                                dst, st, pad, pad, attr);
        std::string impl;
        std::pair<double, double> ms;
        if (d == 0) {
          auto ms_src = make(fpd.src_desc()), ms_w = make(fpd.weights_desc()), ms_dst = make(fpd.dst_desc()),
               pad_m = make(fpd.scratchpad_desc());
          convolution_forward c(fpd);
          impl = fpd.impl_info_str();
          ms = min_median_ms([&] { c.execute(strm, {{DNNL_ARG_SRC, ms_src}, {DNNL_ARG_WEIGHTS, ms_w}, {DNNL_ARG_DST, ms_dst},
                                                {DNNL_ARG_SCRATCHPAD, pad_m}}); }, reps);
        } else if (d == 1) {
          convolution_backward_data::primitive_desc pd(eng, algorithm::convolution_direct, src, w, dst, st, pad, pad, fpd, attr);
          auto a = make(pd.diff_src_desc()), b = make(pd.weights_desc()), c_ = make(pd.diff_dst_desc()), s = make(pd.scratchpad_desc());
          convolution_backward_data c(pd);
          impl = pd.impl_info_str();
          ms = min_median_ms([&] { c.execute(strm, {{DNNL_ARG_DIFF_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DIFF_DST, c_},
                                                {DNNL_ARG_SCRATCHPAD, s}}); }, reps);
        } else {
          convolution_backward_weights::primitive_desc pd(eng, algorithm::convolution_direct, src, w, dst, st, pad, pad, fpd, attr);
          auto a = make(pd.src_desc()), b = make(pd.diff_weights_desc()), c_ = make(pd.diff_dst_desc()), s = make(pd.scratchpad_desc());
          convolution_backward_weights c(pd);
          impl = pd.impl_info_str();
          ms = min_median_ms([&] { c.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_DIFF_WEIGHTS, b}, {DNNL_ARG_DIFF_DST, c_},
                                                {DNNL_ARG_SCRATCHPAD, s}}); }, reps);
        }
        std::string lay = tn;
        if (t == tag::any) {  // what oneDNN chose for the activations: inner blocking of src
          lay = "any:";
          for (auto md : {fpd.src_desc(), fpd.dst_desc()}) {
            for (auto b : md.get_inner_blks()) lay += std::to_string(b) + "c";
            if (md.get_inner_blks().empty()) lay += md.get_strides()[1] == 1 ? "nhwc" : "nchw";
            lay += md == fpd.src_desc() ? ">" : "";
          }
        }
        std::printf("| %s | %s | %s | %s | %.3f | %.3f | %.1f |\n", p.name, dirs[d], lay.c_str(), impl.c_str(), ms.first,
                    ms.second, flops / ms.first * 1e-6);
        std::fflush(stdout);
      }
    }
  }
}
