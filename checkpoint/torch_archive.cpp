#include "checkpoint/torch_archive.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <fcntl.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>

#include "parallel/logging.h"

namespace titan::torch_archive {
namespace {

using Err = std::runtime_error;
using pickle::Value;
using Kind = Value::Kind;

// A byte range of an open file, as the zip reader sees it.
class RegionAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  RegionAdapter(const Region& r, const std::string& what) : offset_(r.offset), length_(r.length) {
    fd_ = ::open(r.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Err(what + ": cannot open " + r.path + ": " + std::strerror(errno));
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    if (r.offset < 0 || r.length <= 0 || size < r.offset + r.length) {
      ::close(fd_);
      throw Err(what + ": " + r.path + " is truncated: it has " + std::to_string(size) +
                " bytes, the item ends at byte " + std::to_string(r.offset + r.length));
    }
  }
  ~RegionAdapter() override { ::close(fd_); }
  size_t size() const override { return static_cast<size_t>(length_); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    size_t done = 0;
    while (done < n && pos + done < static_cast<uint64_t>(length_)) {
      const ssize_t got =
          ::pread(fd_, static_cast<char*>(buf) + done, n - done, offset_ + static_cast<off_t>(pos + done));
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  int fd_ = -1;
  int64_t offset_, length_;
};

torch::ScalarType storage_dtype(const std::string& cls, const std::string& what) {
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.FloatStorage", torch::kFloat32}, {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},  {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},    {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},   {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},    {"torch.BoolStorage", torch::kBool}};
  auto it = dtypes.find(cls);
  if (it == dtypes.end()) throw Err(what + ": unsupported storage class " + cls);
  return it->second;
}

std::vector<int64_t> ints(const pickle::ValuePtr& v, const std::string& what) {
  if (!v->is(Kind::kTuple)) throw Err(what + ": expected a tuple of ints, found " + v->describe());
  std::vector<int64_t> out;
  for (const auto& i : v->items) {
    if (!i->is(Kind::kInt)) throw Err(what + ": expected an int, found " + i->describe());
    out.push_back(i->integer);
  }
  return out;
}

struct Opened {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  pickle::ValuePtr root;
};

Opened open(const Region& region, const std::string& what) {
  Opened o;
  try {
    o.zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::make_shared<RegionAdapter>(region, what));
    if (o.zip->hasRecord("byteorder")) {
      auto [data, n] = o.zip->getRecord("byteorder");
      if (std::string(static_cast<const char*>(data.get()), n) != "little") throw Err(what + ": a big-endian archive");
    }
    auto [data, n] = o.zip->getRecord("data.pkl");
    o.root = pickle::read(std::string(static_cast<const char*>(data.get()), n), what + " data.pkl");
  } catch (const c10::Error& e) {
    throw Err(what + ": not a torch.save archive (" + first_line(e.what_without_backtrace()) + ")");
  }
  return o;
}

}  // namespace

int64_t write(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink) {
  // Untagged: torch::pickle_save tags dicts with TorchScript types, globals weights_only refuses.
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* p, size_t n) { pickled.insert(pickled.end(), p, p + n); }, nullptr,
                              nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  int64_t size = 0;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
    sink(static_cast<const char*>(p), n);
    size += static_cast<int64_t>(n);
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return size;
}

torch::Tensor read_tensor(const Region& region, const std::string& what) {
  Opened o = open(region, what);
  pickle::ValuePtr root = o.root;
  if (root->is(Kind::kObject) && root->text == "torch._utils._rebuild_parameter" && !root->items.empty())
    root = root->items[0];
  if (!root->is(Kind::kObject) || root->text != "torch._utils._rebuild_tensor_v2" || root->items.size() < 4)
    throw Err(what + ": expected one tensor, found " + root->describe());
  const auto& pid = root->items[0];
  if (!pid->is(Kind::kPersistentId) || !pid->items[0]->is(Kind::kTuple) || pid->items[0]->items.size() != 5)
    throw Err(what + ": the tensor's storage reference is malformed");
  const auto& ref = pid->items[0]->items;  // ('storage', torch.FloatStorage, key, location, numel)
  if (!ref[1]->is(Kind::kGlobal) || !ref[2]->is(Kind::kString) || !ref[4]->is(Kind::kInt))
    throw Err(what + ": the tensor's storage reference is malformed");
  const auto dtype = storage_dtype(ref[1]->text, what);
  const int64_t numel = ref[4]->integer;
  if (!root->items[1]->is(Kind::kInt)) throw Err(what + ": the storage offset is " + root->items[1]->describe());
  const int64_t storage_offset = root->items[1]->integer;
  const auto sizes = ints(root->items[2], what), strides = ints(root->items[3], what);
  if (sizes.size() != strides.size()) throw Err(what + ": sizes and strides differ in length");
  int64_t last = storage_offset;  // the largest storage index the view reaches
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) throw Err(what + ": negative size or stride");
    if (sizes[d] == 0) last = -1;
    if (last >= 0) last += (sizes[d] - 1) * strides[d];
  }
  if (numel < 0 || last >= numel) throw Err(what + ": the tensor reaches past its storage of " + std::to_string(numel));
  const std::string record = "data/" + ref[2]->text;
  torch::Tensor storage = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
  try {
    if (!o.zip->hasRecord(record)) throw Err(what + ": the archive has no storage record " + record);
    const size_t bytes = o.zip->getRecordSize(record);
    if (bytes != static_cast<size_t>(storage.nbytes()))
      throw Err(what + ": storage record " + record + " has " + std::to_string(bytes) + " bytes, expected " +
                std::to_string(storage.nbytes()));
    if (bytes > 0) o.zip->getRecord(record, storage.data_ptr(), bytes);
  } catch (const c10::Error& e) {
    throw Err(what + ": cannot read " + record + " (" + first_line(e.what_without_backtrace()) + ")");
  }
  return storage.as_strided(sizes, strides, storage_offset).contiguous();
}

pickle::ValuePtr read_object(const Region& region, const std::string& what) {
  Opened o = open(region, what);
  std::vector<const Value*> todo = {o.root.get()};
  while (!todo.empty()) {  // a byte item holds plain data
    const Value* v = todo.back();
    todo.pop_back();
    if (v->is(Kind::kPersistentId)) throw Err(what + ": expected plain data, found a tensor");
    for (const auto& i : v->items) todo.push_back(i.get());
    for (const auto& [k, x] : v->entries) todo.push_back(k.get()), todo.push_back(x.get());
  }
  return o.root;
}

}  // namespace titan::torch_archive
