#include "checkpoint/dcp_reader.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>

#include "checkpoint/dcp_state.h"
#include "checkpoint/pickle_reader.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/torch_archive.h"

namespace titan::dcp {
namespace {

namespace fs = std::filesystem;
using Err = std::runtime_error;
using pickle::ValuePtr;
using Kind = pickle::Value::Kind;

const std::string kMetadataModule = "torch.distributed.checkpoint.metadata.";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Err("cannot open " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A dataclass's fields: BUILD's dict, or the (dict, slots dict) pair of a __slots__ class.
ValuePtr fields(const ValuePtr& obj, const std::string& cls, const std::string& where) {
  if (!obj || !obj->is(Kind::kObject) || obj->text != cls)
    throw Err(where + ": expected " + cls + ", found " + (obj ? obj->describe() : "nothing"));
  if (obj->state && obj->state->is(Kind::kDict)) return obj->state;
  if (obj->state && obj->state->is(Kind::kTuple) && obj->state->items.size() == 2) {
    auto merged = std::make_shared<pickle::Value>();
    merged->kind = Kind::kDict;
    for (const auto& part : obj->state->items)
      if (part->is(Kind::kDict))
        merged->entries.insert(merged->entries.end(), part->entries.begin(), part->entries.end());
    return merged;
  }
  throw Err(where + ": " + cls + " has no fields");
}

ValuePtr field(const ValuePtr& dict, const std::string& name, const std::string& where) {
  ValuePtr v = dict->get(name);
  if (!v) throw Err(where + ": no field '" + name + "'");
  return v;
}

// torch.Size(ints) -> the ints.
std::vector<int64_t> size_of(const ValuePtr& v, const std::string& where) {
  if (!v->is(Kind::kObject) || v->text != "torch.Size" || v->items.size() != 1 || !v->items[0]->is(Kind::kTuple))
    throw Err(where + ": expected a torch.Size, found " + v->describe());
  std::vector<int64_t> out;
  for (const auto& i : v->items[0]->items) {
    if (!i->is(Kind::kInt)) throw Err(where + ": a torch.Size holds " + i->describe());
    out.push_back(i->integer);
  }
  return out;
}

int64_t int_of(const ValuePtr& v, const std::string& where) {
  if (!v->is(Kind::kInt)) throw Err(where + ": expected an int, found " + v->describe());
  return v->integer;
}

torch::ScalarType dtype_of(const ValuePtr& properties, const std::string& where) {
  const std::string cls = kMetadataModule + "TensorProperties";
  if (!properties->is(Kind::kObject) || properties->text != cls || !properties->state)
    throw Err(where + ": expected " + cls + ", found " + properties->describe());
  // TensorProperties pickles its fields as a tuple (dtype, layout, requires_grad, memory_format, pin_memory).
  const ValuePtr& state = properties->state;
  ValuePtr dtype = state->is(Kind::kTuple) && !state->items.empty() ? state->items[0]
                   : state->is(Kind::kDict)                         ? state->get("dtype")
                                                                    : nullptr;
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.float32", torch::kFloat32},   {"torch.float", torch::kFloat32},   {"torch.float64", torch::kFloat64},
      {"torch.double", torch::kFloat64},    {"torch.float16", torch::kFloat16}, {"torch.half", torch::kFloat16},
      {"torch.bfloat16", torch::kBFloat16}, {"torch.int64", torch::kInt64},     {"torch.long", torch::kInt64},
      {"torch.int32", torch::kInt32},       {"torch.int", torch::kInt32},       {"torch.int16", torch::kInt16},
      {"torch.short", torch::kInt16},       {"torch.int8", torch::kInt8},       {"torch.uint8", torch::kUInt8},
      {"torch.bool", torch::kBool}};
  if (!dtype || !dtype->is(Kind::kGlobal) || !dtypes.count(dtype->text))
    throw Err(where + ": unsupported dtype " + (dtype ? dtype->describe() : "(none)"));
  return dtypes.at(dtype->text);
}

nlohmann::json to_json(const ValuePtr& v, const std::string& where) {
  switch (v->kind) {
    case Kind::kNone:
      return nullptr;
    case Kind::kBool:
      return v->boolean;
    case Kind::kInt:
      return v->integer;
    case Kind::kFloat:
      return v->real;
    case Kind::kString:
      return v->text;
    case Kind::kBytes:
      return nlohmann::json::binary(std::vector<uint8_t>(v->text.begin(), v->text.end()));
    case Kind::kList:
    case Kind::kTuple: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& i : v->items) out.push_back(to_json(i, where));
      return out;
    }
    case Kind::kDict: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, x] : v->entries) {
        if (k->is(Kind::kString))
          out[k->text] = to_json(x, where);
        else if (k->is(Kind::kInt))
          out[std::to_string(k->integer)] = to_json(x, where);
        else
          throw Err(where + ": a dict key is " + k->describe());
      }
      return out;
    }
    default:
      throw Err(where + ": expected plain data, found " + v->describe());
  }
}

// The non-tensor items dcp_state maps into our state; the others are not read.
bool maps_to_state(const std::string& key) {
  for (const char* prefix : {"train_state.", "lr_scheduler.", "optimizer.param_groups."})
    if (key.rfind(prefix, 0) == 0) return true;
  return false;
}

struct StorageInfo {
  std::string file;
  int64_t offset = 0, length = 0;
};

}  // namespace

bool is_dcp_folder(const std::string& dir) {
  std::ifstream in(fs::path(dir) / checkpoint::kManifestName, std::ios::binary);
  char first = 0;
  return in.get(first) && static_cast<unsigned char>(first) == 0x80;  // pickle's PROTO opcode; JSON starts with '{'
}

checkpoint::Manifest read_manifest(const std::string& dir) {
  const std::string where = (fs::path(dir) / checkpoint::kManifestName).string();
  const ValuePtr root = pickle::read(read_file(where), where);
  const ValuePtr meta = fields(root, kMetadataModule + "Metadata", where);

  // storage_data: MetadataIndex(fqn, offset) -> _StorageInfo(relative_path, offset, length).
  std::map<std::pair<std::string, std::vector<int64_t>>, StorageInfo> storage;
  const ValuePtr storage_data = field(meta, "storage_data", where);
  if (!storage_data->is(Kind::kDict)) throw Err(where + ": storage_data is " + storage_data->describe());
  for (const auto& [k, v] : storage_data->entries) {
    const ValuePtr index = fields(k, kMetadataModule + "MetadataIndex", where + " storage_data");
    const ValuePtr fqn = field(index, "fqn", where);
    if (!fqn->is(Kind::kString)) throw Err(where + ": a MetadataIndex fqn is " + fqn->describe());
    const std::string at = where + " storage_data['" + fqn->text + "']";
    const ValuePtr offset = index->get("offset");
    std::vector<int64_t> offsets;
    if (offset && !offset->is(Kind::kNone)) offsets = size_of(offset, at);
    const ValuePtr info = fields(v, "torch.distributed.checkpoint.filesystem._StorageInfo", at);
    if (const ValuePtr t = info->get("transform_descriptors"); t && !t->is(Kind::kNone) && !t->items.empty())
      throw Err(at + ": the item is stored with transforms (e.g. compression), which titan.cpp does not read");
    StorageInfo s;
    const ValuePtr path = field(info, "relative_path", at);
    if (!path->is(Kind::kString) || path->text.empty() || path->text.find('/') != std::string::npos)
      throw Err(at + ": relative_path " + path->describe() + " is not a file in the folder");
    s.file = path->text;
    s.offset = int_of(field(info, "offset", at), at);
    s.length = int_of(field(info, "length", at), at);
    storage[{fqn->text, offsets}] = s;
  }

  checkpoint::Manifest m;
  m.container = "dcp";
  nlohmann::json items = nlohmann::json::object();  // the non-tensor items by key
  const ValuePtr keys = field(meta, "state_dict_metadata", where);
  if (!keys->is(Kind::kDict)) throw Err(where + ": state_dict_metadata is " + keys->describe());
  std::set<std::string> present;  // data files seen to exist: most items share one
  for (const auto& [k, v] : keys->entries) {
    if (!k->is(Kind::kString)) throw Err(where + ": a state_dict_metadata key is " + k->describe());
    const std::string key = k->text, at = where + " key '" + key + "'";
    auto located = [&](const std::vector<int64_t>& offsets) {
      auto it = storage.find({key, offsets});
      if (it == storage.end())
        throw Err(at + ": storage_data has no item for the chunk at " + c10::str(c10::IntArrayRef(offsets)));
      if (!present.count(it->second.file)) {
        if (!fs::exists(fs::path(dir) / it->second.file))
          throw Err(at + ": its data file " + (fs::path(dir) / it->second.file).string() + " is missing");
        present.insert(it->second.file);
      }
      return it->second;
    };
    if (v->is(Kind::kObject) && v->text == kMetadataModule + "BytesStorageMetadata") {
      const StorageInfo s = located({});
      if (!maps_to_state(key)) continue;  // e.g. the data loader's pickled state: never unpickled
      const std::string what = "'" + key + "' in " + (fs::path(dir) / s.file).string();
      items[key] =
          to_json(torch_archive::read_object({(fs::path(dir) / s.file).string(), s.offset, s.length}, what), what);
      continue;
    }
    const ValuePtr t = fields(v, kMetadataModule + "TensorStorageMetadata", at);
    checkpoint::TensorEntry entry;
    entry.dtype = safetensors::dtype_name(dtype_of(field(t, "properties", at), at));
    entry.shape = size_of(field(t, "size", at), at);
    const ValuePtr chunks = field(t, "chunks", at);
    if (!chunks->is(Kind::kList)) throw Err(at + ": chunks is " + chunks->describe());
    for (const auto& c : chunks->items) {
      const ValuePtr cf = fields(c, kMetadataModule + "ChunkStorageMetadata", at);
      checkpoint::Chunk chunk;
      chunk.offsets = size_of(field(cf, "offsets", at), at);
      chunk.sizes = size_of(field(cf, "sizes", at), at);
      if (chunk.offsets.size() != entry.shape.size() || chunk.sizes.size() != entry.shape.size())
        throw Err(at + ": a chunk's rank differs from the tensor's " + c10::str(c10::IntArrayRef(entry.shape)));
      for (size_t d = 0; d < entry.shape.size(); ++d)
        if (chunk.offsets[d] < 0 || chunk.sizes[d] < 0 || chunk.offsets[d] + chunk.sizes[d] > entry.shape[d])
          throw Err(at + ": the chunk at " + c10::str(c10::IntArrayRef(chunk.offsets)) + " of sizes " +
                    c10::str(c10::IntArrayRef(chunk.sizes)) + " lies outside its size " +
                    c10::str(c10::IntArrayRef(entry.shape)));
      const StorageInfo s = located(chunk.offsets);
      chunk.file = s.file;
      chunk.begin = s.offset;
      chunk.end = s.offset + s.length;
      entry.chunks.push_back(std::move(chunk));
    }
    m.tensors[key] = std::move(entry);
  }
  m.state = state_from_items(items, where);
  if (m.state.contains("train_state")) m.step = m.state["train_state"]["step"].get<int64_t>();
  m.model_only = true;  // until an optimizer moment shows otherwise
  for (const auto& [key, e] : m.tensors) m.model_only = m.model_only && key.rfind("optimizer.state.", 0) != 0;
  m.info = {{"format", "PyTorch Distributed Checkpoint"}};
  return m;
}

torch::Tensor read_chunk(const std::string& dir, const checkpoint::Chunk& chunk, torch::ScalarType dtype,
                         const std::string& key) {
  const std::string path = (fs::path(dir) / chunk.file).string();
  const std::string what = "'" + key + "' in " + path;
  torch::Tensor t = torch_archive::read_tensor({path, chunk.begin, chunk.end - chunk.begin}, what);
  if (t.scalar_type() != dtype)
    throw Err(what + ": the item holds " + std::string(c10::toString(t.scalar_type())) + ", .metadata says " +
              c10::toString(dtype));
  if (t.sizes().vec() != chunk.sizes)
    throw Err(what + ": the item has shape " + c10::str(t.sizes()) + ", .metadata says " +
              c10::str(c10::IntArrayRef(chunk.sizes)));
  return t;
}

}  // namespace titan::dcp
