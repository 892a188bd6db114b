#include "checkpoint/dcp_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "checkpoint/checkpoint_format.h"
#include "checkpoint/pickle_writer.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/torch_archive.h"

namespace titan::dcp {
namespace {

namespace fs = std::filesystem;
using Err = std::runtime_error;

const std::string kMetadataModule = "torch.distributed.checkpoint.metadata";
const std::string kDataFile = "__0_0.distcp";

std::string torch_dtype_name(torch::ScalarType dtype, const std::string& key) {
  static const std::map<torch::ScalarType, std::string> names = {
      {torch::kFloat32, "float32"},   {torch::kFloat64, "float64"}, {torch::kFloat16, "float16"},
      {torch::kBFloat16, "bfloat16"}, {torch::kInt64, "int64"},     {torch::kInt32, "int32"},
      {torch::kInt16, "int16"},       {torch::kInt8, "int8"},       {torch::kUInt8, "uint8"},
      {torch::kBool, "bool"}};
  auto it = names.find(dtype);
  if (it == names.end())
    throw Err("to DCP: '" + key + "' has dtype " + c10::toString(dtype) + ", which DCP cannot hold");
  return it->second;
}

// torch.Size(ints), as Python pickles it.
void size(pickle::Writer& w, const std::vector<int64_t>& v) {
  w.global("torch", "Size").mark().mark();
  for (int64_t i : v) w.integer(i);
  w.tuple().tuple().reduce();
}

// A dataclass instance: cls.__new__(cls), then its fields (the caller pushes them after this,
// then calls end_fields).
void begin_fields(pickle::Writer& w, const std::string& module, const std::string& cls) {
  w.global(module, cls).mark().tuple().new_object().empty_dict().mark();
}
void end_fields(pickle::Writer& w) {
  w.setitems().build();
}

void tensor_metadata(pickle::Writer& w, const std::string& key, const torch::Tensor& t) {
  begin_fields(w, kMetadataModule, "TensorStorageMetadata");
  w.text("properties");
  // TensorProperties pickles as the tuple (dtype, layout, requires_grad, memory_format, pin_memory).
  w.global(kMetadataModule, "TensorProperties").mark().tuple().new_object().mark();
  w.global("torch", torch_dtype_name(t.scalar_type(), key));
  w.global("torch.serialization", "_get_layout").mark().text("torch.strided").tuple().reduce();
  w.boolean(false);
  w.global("builtins", "getattr").mark().global(kMetadataModule, "_MEM_FORMAT_ENCODING");
  w.text("TORCH_CONTIGUOUS_FORMAT").tuple().reduce();
  w.boolean(false).tuple().build();
  w.text("size");
  size(w, t.sizes().vec());
  w.text("chunks").empty_list().mark();
  begin_fields(w, kMetadataModule, "ChunkStorageMetadata");
  w.text("offsets");
  size(w, std::vector<int64_t>(t.dim(), 0));
  w.text("sizes");
  size(w, t.sizes().vec());
  end_fields(w);
  w.appends();
  end_fields(w);
}

struct Placed {
  std::string key;
  bool tensor;
  std::vector<int64_t> offsets;  // tensors: zeros
  int64_t begin, length;
};

}  // namespace

void write_folder(const std::string& dir, const Items& items) {
  fs::create_directories(dir);
  std::error_code ignored;
  fs::remove(fs::path(dir) / checkpoint::kManifestName, ignored);  // incomplete until the new one lands
  const std::string path = (fs::path(dir) / kDataFile).string();
  std::vector<Placed> placed;
  {
    const safetensors::Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (f.fd < 0) throw Err("cannot create " + path + ": " + std::strerror(errno));
    int64_t at = 0;
    auto put = [&](const std::string& key, bool tensor, std::vector<int64_t> offsets, const c10::IValue& value) {
      std::exception_ptr failed;  // raised here, not inside libtorch's zip writer
      const int64_t size = torch_archive::write(value, [&](const char* p, size_t n) {
        if (failed) return;
        try {
          safetensors::write_all(f.fd, p, n, path);
        } catch (...) {
          failed = std::current_exception();
        }
      });
      if (failed) std::rethrow_exception(failed);
      placed.push_back({key, tensor, std::move(offsets), at, size});
      at += size;
    };
    for (const auto& [key, t] : items.tensors) {
      torch_dtype_name(t.scalar_type(), key);  // refuses what DCP cannot describe before writing it
      put(key, true, std::vector<int64_t>(t.dim(), 0), t.detach().cpu().contiguous());
    }
    for (const auto& [key, v] : items.objects) put(key, false, {}, v);
    if (::fsync(f.fd) != 0) throw Err("cannot fsync " + path + ": " + std::strerror(errno));
  }

  pickle::Writer w;
  begin_fields(w, kMetadataModule, "Metadata");
  w.text("state_dict_metadata").empty_dict().mark();
  for (const auto& [key, t] : items.tensors) tensor_metadata(w.text(key), key, t);
  for (const auto& [key, v] : items.objects)
    w.text(key).global(kMetadataModule, "BytesStorageMetadata").mark().tuple().new_object();
  w.setitems();
  // planner_data: each key's path in the state dict; flat keys, as to-torch writes them.
  w.text("planner_data").empty_dict().mark();
  for (const auto& p : placed) w.text(p.key).mark().text(p.key).tuple();
  w.setitems();
  w.text("storage_data").empty_dict().mark();
  for (const auto& p : placed) {
    begin_fields(w, kMetadataModule, "MetadataIndex");
    w.text("fqn").text(p.key);
    if (p.tensor) size(w.text("offset"), p.offsets);
    w.text("index").none();
    end_fields(w);
    begin_fields(w, "torch.distributed.checkpoint.filesystem", "_StorageInfo");
    w.text("relative_path").text(kDataFile).text("offset").integer(p.begin).text("length").integer(p.length);
    end_fields(w);
  }
  w.setitems();
  w.text("version").text("1.0.0");
  end_fields(w);
  checkpoint::write_last(dir, checkpoint::kManifestName, w.finish());
}

}  // namespace titan::dcp
