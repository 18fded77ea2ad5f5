// Backend and kernel registries (see backend.hpp). Kernels register by backend name at static-initialization
// time, before or after their Backend object, so the tables are keyed by name.
#include "core/backend.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace cnn {

namespace {
// Kernels register from static initializers, also of a backend library loaded while other threads compile, so
// registration and lookup take a lock; entries are never removed, so a returned pointer stays valid.
std::map<std::pair<std::string, std::string>, KernelEntry>& entries() {
  static std::map<std::pair<std::string, std::string>, KernelEntry> m;
  return m;
}
std::mutex& entries_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::shared_ptr<Backend>>& backends() {
  static std::map<std::string, std::shared_ptr<Backend>> m;
  return m;
}
std::mutex& backends_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

void register_kernel(const std::string& backend, const std::string& op, KernelFactory f) {
  std::lock_guard<std::mutex> hold(entries_mutex());
  entries()[{backend, op}].make = std::move(f);
}
void register_layout_rule(const std::string& backend, const std::string& op, LayoutRule r) {
  std::lock_guard<std::mutex> hold(entries_mutex());
  entries()[{backend, op}].layout = std::move(r);
}
void register_bf16_op(const std::string& backend, const std::string& op, Bf16Pred pred) {
  std::lock_guard<std::mutex> hold(entries_mutex());
  KernelEntry& e = entries()[{backend, op}];
  e.bf16 = true;
  e.bf16_pred = std::move(pred);
}
void register_kernel_inplace(const std::string& backend, const std::string& op, bool inplace) {
  std::lock_guard<std::mutex> hold(entries_mutex());
  entries()[{backend, op}].inplace = inplace;
}
const KernelEntry* find_kernel_entry(const std::string& backend, const std::string& op) {
  std::lock_guard<std::mutex> hold(entries_mutex());
  auto it = entries().find({backend, op});
  return it == entries().end() || !it->second.make ? nullptr : &it->second;
}

bool Backend::bf16_capable(const Node& n, const std::vector<TensorDesc>& in, const std::vector<TensorDesc>& out) const {
  const KernelEntry* e = kernel(n.op);
  return e && e->bf16 && (!e->bf16_pred || e->bf16_pred(n, in, out));
}

void Backend::copy_in(void* dst, const void* host_src, size_t bytes, Stream*) const {
  if (bytes) std::memcpy(dst, host_src, bytes);
}
void Backend::copy_out(void* host_dst, const void* src, size_t bytes, Stream*) const {
  if (bytes) std::memcpy(host_dst, src, bytes);
}
void Backend::copy(void* dst, const void* src, size_t bytes, Stream*) const {
  if (bytes) std::memmove(dst, src, bytes);
}

namespace {
// The folder libcnnnative was loaded from (plugins live beside it).
std::string core_dir() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&backend_names), &info) || !info.dli_fname) return ".";
  std::string p = info.dli_fname;
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

// Loads libcnnnative_<name>.so once (its static initializers register the backend); "" or why not.
std::string load_plugin(const std::string& name) {
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return "not a plugin name";
  static std::mutex mu;
  static std::map<std::string, std::string> tried;  // name -> the outcome of the one attempt
  std::lock_guard<std::mutex> hold(mu);
  auto it = tried.find(name);
  if (it != tried.end()) return it->second;
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("CNNNATIVE_PLUGIN_PATH")) {
    std::string s = env;
    for (size_t a = 0; a <= s.size();) {
      size_t b = s.find(':', a);
      if (b == std::string::npos) b = s.size();
      if (b > a) dirs.push_back(s.substr(a, b - a));
      a = b + 1;
    }
  }
  dirs.push_back(core_dir());
  std::string why;
  for (const auto& d : dirs) {
    const std::string path = d + "/libcnnnative_" + name + ".so";
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      std::fclose(f);
      if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) return tried[name] = "";
      const char* e = dlerror();
      return tried[name] = "its plugin " + path + " failed to load: " + (e ? e : "unknown error");
    }
    why += (why.empty() ? "" : ", ") + d;
  }
  return tried[name] = "no plugin libcnnnative_" + name + ".so in " + why;
}
}  // namespace

void register_backend(std::shared_ptr<Backend> b) {
  std::lock_guard<std::mutex> hold(backends_mutex());
  backends()[b->name()] = std::move(b);
}
std::shared_ptr<const Backend> get_backend(const std::string& name) {
  {
    std::lock_guard<std::mutex> hold(backends_mutex());
    auto it = backends().find(name);
    if (it != backends().end()) return it->second;
  }
  const std::string why = load_plugin(name);  // unlocked: the plugin's initializers register
  std::lock_guard<std::mutex> hold(backends_mutex());
  auto it = backends().find(name);
  if (it != backends().end()) return it->second;
  std::string known;
  for (auto& kv : backends()) known += (known.empty() ? "" : ", ") + kv.first;
  throw Error("compile: unknown backend '" + name + "' (registered: " + known + "; " + why + ")");
}
std::vector<std::string> backend_names() {
  std::lock_guard<std::mutex> hold(backends_mutex());
  std::vector<std::string> v;
  for (auto& kv : backends()) v.push_back(kv.first);
  return v;
}

}  // namespace cnn
