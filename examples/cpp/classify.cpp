// classify: loads a .cnn model file and classifies images with it, one line per image.
//   classify MODEL.cnn IMAGE...
// IMAGE is a binary PGM ("P5", 8-bit) or a raw float32 file (little-endian, C*H*W values, used as is).
// Preprocessing of a PGM: pixel p -> p / maxval (p / 255 for the usual 8-bit images), no resizing or
// normalization: the image must be H x W of the model's input [N, 1, H, W]. All images run as one batch.
// Output, one tab-separated line per image: file, predicted class (argmax of the model's output), its
// probability (softmax of the outputs, which are read as logits), then every output value; outputs are printed
// with %.9g, so they read back as the exact float32 values.
// Errors (unreadable model or image, wrong size, an image argument that is a folder) print "classify: MESSAGE"
// to stderr and exit 1.
#include <cnnnative/model.hpp>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

// The bytes of the file at `path`, at most `limit` of them (a larger file is refused without reading it all).
std::vector<unsigned char> read_file(const std::string& path, size_t limit) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw cnn::Error("image '" + path + "': cannot open: " + std::strerror(errno));
  std::vector<unsigned char> b;
  unsigned char buf[1 << 16];
  size_t n;
  while (b.size() <= limit && (n = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
  const int err = std::ferror(f) ? (errno ? errno : EIO) : 0;  // a folder: EISDIR
  std::fclose(f);
  if (err) throw cnn::Error("image '" + path + "': cannot read: " + std::strerror(err));
  if (b.size() > limit)
    throw cnn::Error("image '" + path + "': over " + std::to_string(limit) +
                     " bytes, larger than any input of the model");
  return b;
}

// Next header token of a PGM: skips whitespace and # comments.
long pgm_number(const std::vector<unsigned char>& b, size_t& i, const std::string& path) {
  for (;;) {
    while (i < b.size() && std::isspace(b[i])) ++i;
    if (i < b.size() && b[i] == '#') {
      while (i < b.size() && b[i] != '\n') ++i;
      continue;
    }
    break;
  }
  long v = 0;
  size_t start = i;
  while (i < b.size() && std::isdigit(b[i]) && v < 1000000) v = v * 10 + (b[i++] - '0');
  if (i == start) throw cnn::Error("image '" + path + "': malformed PGM header");
  return v;
}

// Writes C*H*W floats for one image of the model's input [N, C, H, W] into `dst`.
void load_image(const std::string& path, const cnn::Shape& in, float* dst) {
  const int64_t per = cnn::numel(in) / in[0];
  // a raw float32 input has per * 4 bytes, a PGM one byte per pixel after a header of a few bytes
  std::vector<unsigned char> b = read_file(path, size_t(per) * 4 + 65536);
  if (b.size() >= 2 && b[0] == 'P' && b[1] == '5') {
    size_t i = 2;
    long w = pgm_number(b, i, path), h = pgm_number(b, i, path), maxval = pgm_number(b, i, path);
    if (maxval < 1 || maxval > 255)
      throw cnn::Error("image '" + path + "': only 8-bit PGM (maxval <= 255) is supported");
    ++i;  // the single whitespace byte before the pixels
    if (in.size() != 4 || in[1] != 1 || in[2] != h || in[3] != w)
      throw cnn::Error("image '" + path + "': " + std::to_string(w) + "x" + std::to_string(h) +
                       " grayscale, the model takes " + cnn::shape_str(in) + " (N, C, H, W)");
    if (b.size() < i || b.size() - i < size_t(w * h)) throw cnn::Error("image '" + path + "': truncated PGM");
    for (long k = 0; k < w * h; ++k) dst[k] = float(b[i + k]) / float(maxval);
    return;
  }
  if (int64_t(b.size()) != per * 4)
    throw cnn::Error("image '" + path + "': " + std::to_string(b.size()) + " bytes; a raw float32 input for " +
                     cnn::shape_str(in) + " has " + std::to_string(per * 4));
  for (int64_t k = 0; k < per; ++k) {  // little-endian float32
    uint32_t u =
        uint32_t(b[4 * k]) | uint32_t(b[4 * k + 1]) << 8 | uint32_t(b[4 * k + 2]) << 16 | uint32_t(b[4 * k + 3]) << 24;
    std::memcpy(dst + k, &u, 4);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu";
  if (argc >= 3 && std::string(argv[1]) == "--device") {  // classify --device cuda MODEL IMAGE...
    device = argv[2];
    argv += 2;
    argc -= 2;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s [--device cpu|cuda] MODEL.cnn IMAGE...  (IMAGE: 8-bit binary PGM or raw float32)\n",
                 argv[0]);
    return 2;
  }
  try {
    cnn::Model model = cnn::load_model(argv[1]);
    const int64_t n = argc - 2;
    const int64_t per = cnn::numel(model.input_shape()) / model.input_shape()[0];
    std::vector<float> batch(size_t(n * per));
    for (int64_t k = 0; k < n; ++k) load_image(argv[2 + k], model.input_shape(), batch.data() + k * per);

    cnn::InferenceSession session(model, n, device);  // any batch size: the graph is replayed for N = n
    std::vector<float> out = session.run(batch);
    const int64_t classes = session.output_size() / n;
    for (int64_t k = 0; k < n; ++k) {
      const float* y = out.data() + k * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; ++c)
        if (y[c] > y[best]) best = c;
      double sum = 0;  // softmax, shifted by the largest output
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(y[c]) - double(y[best]));
      std::printf("%s\t%lld\t%.6f\t", argv[2 + k], (long long)best, 1.0 / sum);
      for (int64_t c = 0; c < classes; ++c) std::printf(c ? " %.9g" : "%.9g", y[c]);
      std::printf("\n");
    }
  } catch (const cnn::Error& e) {
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // the last resort: out of memory, ...
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  }
  return 0;
}
