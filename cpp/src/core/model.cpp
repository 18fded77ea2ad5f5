// cnn::Model, model file I/O and rebatching. Owns: the checks that a graph, a ParamStore and an input shape
// form a model; the file side of loading (FileSource: fstat for the size, pread(2) for the ranges fmt::decode
// asks for as it validates, never mmap, so a file shrinking under us is an error, not a SIGBUS; nothing is
// read or allocated in proportion to the file before its header and section table are checked); atomic
// writes (temporary file `<path>.tmp.<pid>.<n>` in the target's folder, fsync, rename; on any failure the
// temporary file is removed and the target is untouched; a successful write also removes the temporaries
// that killed writers of the same path left behind, as python/cnnnative/_atomic.py does).
// Never: links sessions or kernels (core/inference.cpp does), so the fuzzer builds with this file alone.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>

#include "core/serialize.hpp"

namespace cnn {

Model::Model(Graph graph, std::shared_ptr<ParamStore> params, Shape input_shape, ExtraState extra_state)
    : graph_(std::move(graph)),
      params_(std::move(params)),
      input_shape_(std::move(input_shape)),
      extra_(std::move(extra_state)) {
  const int nv = int(graph_.values.size());
  if (!params_) throw Error("model: no parameter store");
  if (graph_.inputs.size() != 1)
    throw Error("model: the graph must have exactly one input, it has " + std::to_string(graph_.inputs.size()));
  if (graph_.outputs.size() != 1)
    throw Error("model: the graph must have exactly one output, it has " + std::to_string(graph_.outputs.size()));
  for (int v : {graph_.inputs[0], graph_.outputs[0]})
    if (v < 0 || v >= nv) throw Error("model: graph input/output id " + std::to_string(v) + " does not exist");
  const Value& in = graph_.values[graph_.inputs[0]];
  if (in.desc.dtype != DType::f32)
    throw Error(std::string("model: the input must be float32, got ") + dtype_name(in.desc.dtype));
  if (input_shape_.empty()) throw Error("model: the input shape must be [N, ...], got []");
  if (in.desc.shape != input_shape_)
    throw Error("model: the graph's input is " + shape_str(in.desc.shape) + ", the input shape given is " +
                shape_str(input_shape_));
  const Value& out = graph_.values[graph_.outputs[0]];
  if (out.desc.dtype != DType::f32)
    throw Error(std::string("model: the output must be float32, got ") + dtype_name(out.desc.dtype));
  for (int p : graph_.params) {
    if (p < 0 || p >= nv) throw Error("model: parameter id " + std::to_string(p) + " does not exist");
    const Value& v = graph_.values[p];
    const auto& e = params_->find(v.name);
    const bool trainable = v.kind == ValueKind::Param;
    if (e.shape != v.desc.shape || e.trainable != trainable)
      throw Error("model: parameter '" + v.name + "': the graph expects " + shape_str(v.desc.shape) +
                  (trainable ? " trainable" : " non-trainable") + ", the store holds " + shape_str(e.shape) +
                  (e.trainable ? " trainable" : " non-trainable"));
  }
  std::set<std::string> names;
  for (auto& e : params_->entries()) names.insert(e.name);
  for (auto& kv : extra_)
    if (kv.first.empty() || !names.insert(kv.first).second)
      throw Error("model: extra state name '" + kv.first + "' is empty or already used");
}

const Shape& Model::output_shape() const { return graph_.values[graph_.outputs[0]].desc.shape; }

Model Model::from_bytes(const void* data, size_t size) {
  return fmt::decode(static_cast<const uint8_t*>(data), size, "<bytes>");
}
std::vector<uint8_t> Model::to_bytes() const {
  try {
    return fmt::encode(*this);
  } catch (const Error& e) {
    throw Error(std::string("save_model: ") + e.what());
  }
}
Model Model::load(const std::string& path) { return load_model(path); }
void Model::save(const std::string& path) const { save_model(*this, path); }

// ---- files ----
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string errno_str(int e) { return std::strerror(e); }

// A model file as a fmt::ByteSource: opened and sized (fstat) here, read with pread(2) in the ranges
// fmt::decode asks for. O_NONBLOCK so that opening a FIFO does not wait for a writer (it is then refused
// as not a regular file); it has no effect on regular files.
class FileSource final : public fmt::ByteSource {
 public:
  explicit FileSource(const std::string& path) : path_(path) {
    auto fail = [&](const std::string& m) -> Error { return Error("model file '" + path + "': " + m); };
    if (path.find('\0') != std::string::npos)  // open() would cut it there (and so would what())
      throw Error("model file '" + path.substr(0, path.find('\0')) + "...': the path contains a NUL byte");
    f_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f_.fd < 0) throw fail("cannot open: " + errno_str(errno));
    struct stat st;
    if (::fstat(f_.fd, &st) != 0) throw fail("cannot stat: " + errno_str(errno));
    if (!S_ISREG(st.st_mode)) throw fail("not a regular file");
    int fl = ::fcntl(f_.fd, F_GETFL);
    if (fl >= 0) ::fcntl(f_.fd, F_SETFL, fl & ~O_NONBLOCK);
    size_ = uint64_t(st.st_size);
  }
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, size_t n, uint8_t* dst) override {
    while (n) {
      ssize_t r = ::pread(f_.fd, dst, std::min<size_t>(n, size_t(1) << 30), off_t(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Error("read failed at byte " + std::to_string(offset) + ": " + errno_str(errno));
      if (r == 0)
        throw Error("the file shrank while it was read (it ends before byte " + std::to_string(offset + n) +
                    "; it had " + std::to_string(size_) + " bytes when opened)");
      dst += r;
      offset += uint64_t(r);
      n -= size_t(r);
    }
  }

 private:
  std::string path_;
  Fd f_;
  uint64_t size_ = 0;
};

// The folder and the file name of `path`, as open(2) and readdir(3) see them.
std::pair<std::string, std::string> split_path(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

// "<digits>.<digits>" with a positive pid that fits pid_t: the tail of a writer's temporary file name.
bool parse_tmp_tail(const std::string& tail, pid_t* pid) {
  size_t dot = tail.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 10 || dot + 1 == tail.size() || tail.size() - dot - 1 > 20)
    return false;
  for (size_t i = 0; i < tail.size(); ++i)
    if (i != dot && (tail[i] < '0' || tail[i] > '9')) return false;
  unsigned long long v = std::stoull(tail.substr(0, dot));
  if (v == 0 || v > (unsigned long long)INT_MAX) return false;
  *pid = pid_t(v);
  return true;
}

// Removes `<name>.tmp.<pid>.<n>` files beside `path` whose writer no longer exists (kill(pid, 0) fails with
// ESRCH): what a save killed mid-write leaves. Never this process's own (another thread may be writing
// one), never a live or unknown process's (EPERM: alive, another user's). Best effort: errors are ignored.
void remove_stale_temporaries(const std::string& path) {
  auto [dir, name] = split_path(path);
  if (name.empty()) return;
  const std::string prefix = name + ".tmp.";
  std::vector<std::string> stale;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string entry = e->d_name;
    pid_t pid;
    if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) continue;
    if (!parse_tmp_tail(entry.substr(prefix.size()), &pid) || pid == ::getpid()) continue;
    if (::kill(pid, 0) == -1 && errno == ESRCH) stale.push_back(entry);
  }
  ::closedir(d);
  for (auto& e : stale) ::unlink((dir + "/" + e).c_str());
}

void write_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  if (path.find('\0') != std::string::npos)  // the system calls would write the path cut at it
    throw Error("save_model('" + path.substr(0, path.find('\0')) + "...'): the path contains a NUL byte");
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  auto fail = [&](const std::string& m, int e) {
    ::unlink(tmp.c_str());
    throw Error("save_model('" + path + "'): " + m + ": " + errno_str(e));
  };
  Fd f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f.fd < 0) throw Error("save_model('" + path + "'): cannot create '" + tmp + "': " + errno_str(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(f.fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      fail("write failed after " + std::to_string(done) + " of " + std::to_string(bytes.size()) + " bytes",
           w < 0 ? errno : EIO);
    done += size_t(w);
  }
  if (::fsync(f.fd) != 0) fail("fsync failed", errno);
  int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) fail("close failed", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename the temporary file over it", errno);
  // Make the rename durable too (best effort: some file systems refuse fsync on a folder).
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd >= 0) ::fsync(d.fd);
  remove_stale_temporaries(path);
}

}  // namespace

Model load_model(const std::string& path) {
  FileSource file(path);
  return fmt::decode(file, path);
}

void save_model(const Model& model, const std::string& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = fmt::encode(model);
  } catch (const Error& e) {
    throw Error("save_model('" + path + "'): " + e.what());
  }
  write_atomic(path, bytes);
}

// ---- rebatching ----
namespace {
// Whether node n takes the batch out of the outermost place of its first input: an axis, axes or permutation naming
// dimension 0, a reduction over every axis, or a slice that does not keep the whole of dimension 0.
bool moves_batch(const Graph& g, const Node& n) {
  const Shape& x = n.inputs.empty() ? Shape{} : g.values[size_t(n.inputs[0])].desc.shape;
  const int64_t r = int64_t(x.size());
  auto batch_axis = [&](int64_t a) { return a == 0 || a == -r; };
  if (n.attrs.ints.count("axis") && batch_axis(n.attrs.i("axis"))) return true;
  const std::vector<int64_t> axes = n.attrs.is("axes", {});
  for (int64_t a : axes)
    if (batch_axis(a)) return true;
  if (n.op.rfind("reduce", 0) == 0 && axes.empty()) return true;
  const std::vector<int64_t> perm = n.attrs.is("perm", {});
  if (!perm.empty() && perm[0] != 0) return true;
  if (n.op == "slice") {
    const std::vector<int64_t> st = n.attrs.is("starts", {}), sp = n.attrs.is("steps", {}),
                               sz = n.attrs.is("sizes", {});
    return x.empty() || st.empty() || sp.empty() || sz.empty() || st[0] != 0 || sp[0] != 1 || sz[0] != x[0];
  }
  return false;
}
}  // namespace

// The batch is the outermost part of the inputs' first dimension, and of every value computed from them by nodes
// that do not move it (moves_batch) while their first dimension stays a multiple of the traced batch B0: such a
// value holds B0 * k rows and must hold batch * k after rebatching. Attributes that carry sizes traced at B0 follow
// the batch (a reshape's target shape, a slice keeping all of dimension 0); any other node whose output does not
// follow it (a constant or an attribute computed from the traced batch) is refused, naming it, instead of giving a
// session that silently computes some other thing.
Graph rebatch(const Graph& graph, int64_t batch) {
  if (batch < 1) throw Error("rebatch: the batch size must be >= 1, got " + std::to_string(batch));
  std::vector<Shape> shapes;
  int64_t b0 = -1;
  for (int v : graph.inputs) {
    Shape s = graph.values.at(size_t(v)).desc.shape;
    if (s.empty()) throw Error("rebatch: input '" + graph.values[size_t(v)].name + "' has no batch dimension");
    b0 = b0 == -1 || b0 == s[0] ? s[0] : 0;  // 0: the inputs disagree, nothing follows the batch
    s[0] = batch;
    shapes.push_back(s);
  }
  Graph src = graph;
  std::vector<char> outer(graph.values.size(), 0);
  if (b0 > 0 && batch != b0) {
    for (int v : graph.inputs) outer[size_t(v)] = 1;
    for (Node& n : src.nodes) {
      const bool keep = std::any_of(n.inputs.begin(), n.inputs.end(), [&](int v) { return outer[size_t(v)]; }) &&
                        !moves_batch(graph, n);
      for (int o : n.outputs) {
        const Shape& s = graph.values[size_t(o)].desc.shape;
        outer[size_t(o)] = keep && !s.empty() && s[0] % b0 == 0;
      }
      if (!keep || n.outputs.empty() || !outer[size_t(n.outputs[0])]) continue;
      if (n.op == "reshape") {  // the traced output shape, its rows scaled: a -1 or an explicit B0 alike
        Shape s = graph.values[size_t(n.outputs[0])].desc.shape;
        s[0] = s[0] / b0 * batch;
        n.attrs.ints["shape"] = s;
      } else if (n.op == "slice") {  // keeps all of dimension 0 (moves_batch)
        std::vector<int64_t> sz = n.attrs.is("sizes", {});
        sz[0] = sz[0] / b0 * batch;
        n.attrs.ints["sizes"] = sz;
      }
    }
  }
  Graph g;
  try {
    g = fmt::replay(src, shapes, false);
  } catch (const Error& e) {
    throw Error("batch size " + std::to_string(batch) + ": " + e.what());
  }
  for (const Node& n : graph.nodes)
    for (int o : n.outputs) {
      if (!outer[size_t(o)]) continue;
      const Shape& was = graph.values[size_t(o)].desc.shape;
      const Shape& now = g.values[size_t(o)].desc.shape;
      const int64_t want = was[0] / b0 * batch;
      if (now.empty() || now[0] != want)
        throw Error("batch size " + std::to_string(batch) + ": node '" + n.name + "' ('" + n.op +
                    "') does not follow the batch: traced at batch " + std::to_string(b0) + " it gave " +
                    shape_str(was) + ", at batch " + std::to_string(batch) + " it gives " + shape_str(now) +
                    " where the first dimension should be " + std::to_string(want) +
                    " (a size computed from the traced batch); run the model at batch " + std::to_string(b0) +
                    ", or build it so that no size depends on the batch (x.flatten(1), reshape(-1, ...))");
    }
  return g;
}

}  // namespace cnn
