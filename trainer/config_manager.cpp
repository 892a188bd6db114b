// Parsing of the TOML file and of --section.key overrides into a JobConfig; --help; the TOML dump.
#include "trainer/config_manager.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <toml++/toml.h>

#include "parallel/nearest_name.h"
#include "trainer/config_field.h"

namespace titan {
namespace {

using Err = std::invalid_argument;

std::string normalize_name(std::string name) {  // `-` and `_` are interchangeable in names
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

const ConfigField* find_field(const std::string& name) {
  for (const auto& f : config_fields())
    if (f.name() == name) return &f;
  return nullptr;
}

std::string nearest_key(const std::string& name) {
  const ConfigField* best = nullptr;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& f : config_fields()) {
    size_t d = edit_distance(name, f.name());
    // A bare key that matches some section's key exactly is a strong hint.
    if (name == f.key) d = 0;
    if (d < best_d) best_d = d, best = &f;
  }
  return best ? best->name() : "";
}

bool is_section(const std::string& path) {
  for (const auto& f : config_fields())
    if (f.section == path || f.section.rfind(path + ".", 0) == 0) return true;
  return false;
}

const char* kind_name(FieldKind k) {
  switch (k) {
    case FieldKind::kBool: return "bool";
    case FieldKind::kInt: return "int";
    case FieldKind::kFloat: return "float";
    case FieldKind::kStr: return "str";
    case FieldKind::kOptInt: return "int|None";
    case FieldKind::kOptFloat: return "float|None";
    case FieldKind::kOptStr: return "str|None";
    case FieldKind::kStrList: return "list[str]";
    case FieldKind::kStrLists: return "list[list[str]]";
  }
  return "?";
}

std::string format_float(double v) {
  std::ostringstream os;
  os << std::setprecision(std::numeric_limits<double>::max_digits10 - 2) << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a TOML float
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& item : items) out += (out.size() > 1 ? ", " : "") + quote(item);
  return out + "]";
}

// The value as TOML text; nullopt when the value is None (TOML has no null).
std::optional<std::string> toml_value(const ConfigField& f, const JobConfig& c) {
  switch (f.kind) {
    case FieldKind::kBool: return f.ref<bool>(c) ? "true" : "false";
    case FieldKind::kInt: return std::to_string(f.ref<int64_t>(c));
    case FieldKind::kFloat: return format_float(f.ref<double>(c));
    case FieldKind::kStr: return quote(f.ref<std::string>(c));
    case FieldKind::kOptInt: {
      const auto& v = f.ref<std::optional<int64_t>>(c);
      return v ? std::optional<std::string>(std::to_string(*v)) : std::nullopt;
    }
    case FieldKind::kOptFloat: {
      const auto& v = f.ref<std::optional<double>>(c);
      return v ? std::optional<std::string>(format_float(*v)) : std::nullopt;
    }
    case FieldKind::kOptStr: {
      const auto& v = f.ref<std::optional<std::string>>(c);
      return v ? std::optional<std::string>(quote(*v)) : std::nullopt;
    }
    case FieldKind::kStrList: return quoted_list(f.ref<std::vector<std::string>>(c));
    case FieldKind::kStrLists: {
      std::string out = "[";
      for (const auto& list : f.ref<std::vector<std::vector<std::string>>>(c)) out += (out.size() > 1 ? ", " : "") + quoted_list(list);
      return out + "]";
    }
  }
  return std::nullopt;
}

int64_t parse_int(const std::string& text, const std::string& what) {
  size_t pos = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (text.empty() || pos != text.size()) throw Err(what + " expects an integer, got '" + text + "'");
  return v;
}

double parse_float(const std::string& text, const std::string& what) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (text.empty() || pos != text.size() || !std::isfinite(v))
    throw Err(what + " expects a number, got '" + text + "'");
  return v;
}

bool is_none(const std::string& text) { return text == "None" || text == "none" || text == "null"; }

bool parse_bool(const std::string& text, const std::string& what) {
  if (text == "true" || text == "True" || text == "1") return true;
  if (text == "false" || text == "False" || text == "0") return false;
  throw Err(what + " expects true or false, got '" + text + "'");
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  if (text.empty()) return items;
  std::string item;
  std::istringstream is(text);
  while (std::getline(is, item, ',')) items.push_back(item);
  if (text.back() == ',') items.push_back("");
  return items;
}

void set_from_toml(const ConfigField& f, JobConfig& c, const toml::node& node, const std::string& where);

// Sets a field from command-line text.
void set_from_text(const ConfigField& f, JobConfig& c, const std::string& text) {
  const std::string what = "--" + f.name();
  switch (f.kind) {
    case FieldKind::kBool: f.ref<bool>(c) = parse_bool(text, what); break;
    case FieldKind::kInt: f.ref<int64_t>(c) = parse_int(text, what); break;
    case FieldKind::kFloat: f.ref<double>(c) = parse_float(text, what); break;
    case FieldKind::kStr: f.ref<std::string>(c) = text; break;
    case FieldKind::kOptInt:
      f.ref<std::optional<int64_t>>(c) = is_none(text) ? std::nullopt : std::optional<int64_t>(parse_int(text, what));
      break;
    case FieldKind::kOptFloat:
      f.ref<std::optional<double>>(c) = is_none(text) ? std::nullopt : std::optional<double>(parse_float(text, what));
      break;
    case FieldKind::kOptStr:
      f.ref<std::optional<std::string>>(c) = is_none(text) ? std::nullopt : std::optional<std::string>(text);
      break;
    case FieldKind::kStrList: f.ref<std::vector<std::string>>(c) = split_list(text); break;
    case FieldKind::kStrLists: {  // TOML's [["a", "b"], ["c"]], or lists joined by ';': a,b;c
      auto& lists = f.ref<std::vector<std::vector<std::string>>>(c);
      lists.clear();
      if (!text.empty() && text.front() == '[') {
        toml::table parsed;
        try {
          parsed = toml::parse("v = " + text);
        } catch (const toml::parse_error& e) {
          throw Err(what + " expects a list of lists of strings, e.g. [[\"tok_embeddings\", \"layers.0\"], [\"layers.1\"]] "
                    "or tok_embeddings,layers.0;layers.1, got '" + text + "'");
        }
        set_from_toml(f, c, *parsed.get("v"), what);
        break;
      }
      std::string list;
      std::istringstream is(text);
      while (std::getline(is, list, ';')) lists.push_back(split_list(list));
      break;
    }
  }
}

// Sets a field from a TOML node, checking its TOML type.
void set_from_toml(const ConfigField& f, JobConfig& c, const toml::node& node, const std::string& where) {
  auto type_error = [&](const char* expected) {
    return Err(where + ": " + f.name() + " expects " + expected + ", got " +
               std::string(toml::impl::node_type_friendly_names[static_cast<int>(node.type())]));
  };
  switch (f.kind) {
    case FieldKind::kBool:
      if (!node.is_boolean()) throw type_error("a boolean");
      f.ref<bool>(c) = node.as_boolean()->get();
      break;
    case FieldKind::kInt:
    case FieldKind::kOptInt:
      if (!node.is_integer()) throw type_error("an integer");
      if (f.kind == FieldKind::kInt) f.ref<int64_t>(c) = node.as_integer()->get();
      else f.ref<std::optional<int64_t>>(c) = node.as_integer()->get();
      break;
    case FieldKind::kFloat:
    case FieldKind::kOptFloat: {
      double v;
      if (node.is_floating_point()) v = node.as_floating_point()->get();
      else if (node.is_integer()) v = static_cast<double>(node.as_integer()->get());
      else throw type_error("a number");
      if (f.kind == FieldKind::kFloat) f.ref<double>(c) = v;
      else f.ref<std::optional<double>>(c) = v;
      break;
    }
    case FieldKind::kStr:
    case FieldKind::kOptStr:
      if (!node.is_string()) throw type_error("a string");
      if (f.kind == FieldKind::kStr) f.ref<std::string>(c) = node.as_string()->get();
      else f.ref<std::optional<std::string>>(c) = node.as_string()->get();
      break;
    case FieldKind::kStrList: {
      if (!node.is_array()) throw type_error("an array of strings");
      std::vector<std::string> items;
      for (const auto& item : *node.as_array()) {
        if (!item.is_string()) throw type_error("an array of strings");
        items.push_back(item.as_string()->get());
      }
      f.ref<std::vector<std::string>>(c) = items;
      break;
    }
    case FieldKind::kStrLists: {
      auto& lists = f.ref<std::vector<std::vector<std::string>>>(c);
      lists.clear();
      if (!node.is_array()) throw type_error("an array of arrays of strings");
      for (const auto& list : *node.as_array()) {
        if (!list.is_array()) throw type_error("an array of arrays of strings");
        auto& items = lists.emplace_back();
        for (const auto& item : *list.as_array()) {
          if (!item.is_string()) throw type_error("an array of arrays of strings");
          items.push_back(item.as_string()->get());
        }
      }
      break;
    }
  }
}

void apply_toml_table(const toml::table& table, const std::string& prefix, JobConfig& c, const std::string& file) {
  for (const auto& [k, node] : table) {
    const std::string path = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const std::string where = file + ":" + std::to_string(node.source().begin.line);
    if (node.is_table() && is_section(path)) {
      apply_toml_table(*node.as_table(), path, c, file);
      continue;
    }
    const ConfigField* f = find_field(path);
    if (!f) {
      throw Err(where + ": unknown config key '" + path + "' (did you mean '" + nearest_key(path) +
                "'? run ./run_train.sh --help for every key)");
    }
    set_from_toml(*f, c, node, where);
  }
}

// The config file named on the command line (last one wins), if any.
std::optional<std::string> config_file_from_args(const std::vector<std::string>& args) {
  std::optional<std::string> file;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    for (const std::string flag : {"--job.config_file", "--job.config-file"}) {
      if (a == flag) {
        if (i + 1 >= args.size()) throw Err(flag + " expects a file name");
        file = args[i + 1];
      } else if (a.rfind(flag + "=", 0) == 0) {
        file = a.substr(flag.size() + 1);
      }
    }
  }
  return file;
}

// True when the feature an option configures is switched off, so the option is inert: [profiling]
// with enable_profiling = false, [validation] with enable = false, [quantize.*] with no
// model.converters, pipeline options with pp = 1, context-parallel options with cp = 1.
bool option_inactive(const ConfigField& field, const JobConfig& c) {
  const std::string& section = field.section;
  if (section.rfind("quantize", 0) == 0) return c.model.converters.empty();
  if (section == "parallelism") {
    const auto& p = c.parallelism;
    if (field.key.rfind("pipeline_parallel_", 0) == 0 || field.key == "module_fqns_per_model_part")
      return p.pipeline_parallel_degree == 1;
    if (field.key.rfind("context_parallel_", 0) == 0) return p.context_parallel_degree == 1;
    if (field.key.rfind("expert_", 0) == 0) return p.expert_parallel_degree == 1;
    return false;
  }
  const std::string root = section.substr(0, section.find('.'));
  for (const auto& f : config_fields()) {
    if (f.section == root && f.kind == FieldKind::kBool && (f.key == "enable" || f.key == "enable_profiling"))
      return !f.ref<bool>(c);
  }
  return false;
}

}  // namespace

bool wants_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; });
}

JobConfig parse_job_config(const std::vector<std::string>& args) {
  JobConfig config;
  if (auto file = config_file_from_args(args)) {
    toml::table table;
    std::error_code ec;
    if (std::filesystem::is_directory(*file, ec))  // it would read as an empty file: the defaults
      throw Err("config file '" + *file + "' (--job.config_file) is a directory; give a .toml file, e.g. " +
                (std::filesystem::path(*file) / "debug_model.toml").string());
    std::ifstream probe(*file);
    if (!probe) throw Err("cannot read config file '" + *file + "' (--job.config_file): " + std::strerror(errno));
    try {
      table = toml::parse_file(*file);
    } catch (const toml::parse_error& e) {
      const auto& src = e.source();
      if (!src.path) throw Err("cannot read config file '" + *file + "' (--job.config_file): " + std::string(e.description()));
      throw Err("config file " + *file + ":" + std::to_string(src.begin.line) + ": invalid TOML: " +
                std::string(e.description()));
    }
    apply_toml_table(table, "", config, *file);
    config.job.config_file = *file;
  }

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") continue;
    if (arg.rfind("--", 0) != 0) throw Err("unexpected argument '" + arg + "': overrides look like --section.key value");
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    name = normalize_name(name);
    const ConfigField* f = find_field(name);
    bool negated = false;
    if (!f) {  // --section.no_flag / --section.no-flag
      auto dot = name.rfind('.');
      if (dot != std::string::npos && name.compare(dot + 1, 3, "no_") == 0) {
        const ConfigField* g = find_field(name.substr(0, dot + 1) + name.substr(dot + 4));
        if (g && g->kind == FieldKind::kBool) f = g, negated = true;
      }
    }
    if (!f) throw Err("unknown config key '--" + name + "' (did you mean '--" + nearest_key(name) + "'?)");
    if (f->kind == FieldKind::kBool) {
      bool v = true;
      if (value) v = parse_bool(*value, "--" + name);
      else if (i + 1 < args.size() && (args[i + 1] == "true" || args[i + 1] == "false")) v = args[++i] == "true";
      f->ref<bool>(config) = negated ? !v : v;
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size()) throw Err("--" + f->name() + " expects a value (" + kind_name(f->kind) + ")");
      value = args[++i];
    }
    set_from_text(*f, config, *value);
  }
  return config;
}

std::string config_help_text() {
  const JobConfig defaults;
  std::ostringstream os;
  os << "usage: ./run_train.sh [--section.key value ...]   (env: NGPU, CONFIG_FILE, LOG_RANK)\n"
        "Precedence: defaults < TOML (--job.config_file) < command line. Booleans are flags\n"
        "(--x, --no-x, --x=false); lists are one comma-separated argument; None unsets.\n";
  std::string section;
  for (const auto& f : config_fields()) {
    if (f.section != section) {
      section = f.section;
      os << "\n[" << section << "]\n";
    }
    auto v = toml_value(f, defaults);
    std::string line = "  --" + f.name() + " (" + kind_name(f.kind) + ", default " + (v ? *v : "None") + ")";
    os << line << "\n      " << f.help;
    if (!f.choices.empty()) {
      os << " {";
      for (size_t i = 0; i < f.choices.size(); ++i) os << (i ? "|" : "") << f.choices[i];
      os << "}";
    }
    if (f.support == Support::kNotYet) os << " [not supported yet]";
    os << "\n";
  }
  return os.str();
}

std::string config_to_toml(const JobConfig& config) {
  std::ostringstream os;
  std::string section;
  for (const auto& f : config_fields()) {
    if (f.section != section) {
      section = f.section;
      os << (os.tellp() > 0 ? "\n" : "") << "[" << section << "]\n";
    }
    auto v = toml_value(f, config);
    if (v) os << f.key << " = " << *v << "\n";
    else os << "# " << f.key << " = None\n";
  }
  return os.str();
}

std::vector<std::string> validate_job_config(JobConfig& config) {
  std::vector<std::string> warnings;
  const JobConfig defaults;
  // What to load or export, set while checkpointing is off: silently nothing would happen.
  const std::vector<std::string> load_or_export = {"load_step", "initial_load_path", "initial_load_in_hf",
                                                   "initial_load_model_only", "last_save_in_hf", "create_seed_checkpoint",
                                                   "exclude_from_loading", "load_only"};
  std::string unused_checkpoint_keys;
  for (const auto& f : config_fields()) {
    auto value = toml_value(f, config);
    if (f.section == "checkpoint" && !config.checkpoint.enable && value != toml_value(f, defaults) &&
        std::find(load_or_export.begin(), load_or_export.end(), f.key) != load_or_export.end())
      unused_checkpoint_keys += (unused_checkpoint_keys.empty() ? "" : ", ") + f.name();
    // Choices: every string (or list item) must be one of them.
    if (!f.choices.empty()) {
      std::vector<std::string> items;
      if (f.kind == FieldKind::kStr) items = {f.ref<std::string>(config)};
      if (f.kind == FieldKind::kOptStr && f.ref<std::optional<std::string>>(config))
        items = {*f.ref<std::optional<std::string>>(config)};
      if (f.kind == FieldKind::kStrList) items = f.ref<std::vector<std::string>>(config);
      for (const auto& item : items) {
        if (std::find(f.choices.begin(), f.choices.end(), item) == f.choices.end()) {
          std::string valid, hint;
          auto squeezed = [](std::string v) {
            v.erase(std::remove(v.begin(), v.end(), '_'), v.end());
            return v;
          };
          for (const auto& ch : f.choices) {
            valid += (valid.empty() ? "" : ", ") + ch;
            if (squeezed(ch) == squeezed(item)) hint = " (did you mean '" + ch + "'?)";  // data_loader, as TorchTitan's docs write it
          }
          throw Err(f.name() + " = '" + item + "' is not valid; valid values: " + valid + hint);
        }
      }
    }
    // Switches (enable*) always count; other options only where their feature is switched on.
    const bool is_switch = f.kind == FieldKind::kBool && f.key.rfind("enable", 0) == 0;
    const bool inert = !is_switch && option_inactive(f, config);
    if (f.support == Support::kNotYet && !inert && value != toml_value(f, defaults)) {
      throw Err(f.name() + " = " + (value ? *value : "None") + ": not supported yet by titan.cpp (leave it at its default " +
                (toml_value(f, defaults) ? *toml_value(f, defaults) : "None") + ")");
    }
  }

  if (!unused_checkpoint_keys.empty())
    warnings.push_back("checkpoint.enable is false, so these have no effect: " + unused_checkpoint_keys +
                       " (pass --checkpoint.enable)");
  if (config.model.tokenizer_path) {
    warnings.push_back("model.tokenizer_path is deprecated; use model.hf_assets_path (the folder holding tokenizer.model)");
    std::string p = *config.model.tokenizer_path;
    const std::string suffix = "/tokenizer.model";
    if (p.size() >= suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0)
      p = p.substr(0, p.size() - suffix.size());
    config.model.hf_assets_path = p;
  }

  auto positive = [](const char* name, int64_t v) {
    if (v <= 0) throw Err(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  auto non_negative = [](const char* name, double v) {
    if (!(v >= 0)) throw Err(std::string(name) + " must be >= 0, got " + format_float(v));
  };
  positive("training.local_batch_size", config.training.local_batch_size);
  positive("training.seq_len", config.training.seq_len);
  positive("training.steps", config.training.steps);
  positive("metrics.log_freq", config.metrics.log_freq);
  positive("checkpoint.interval", config.checkpoint.interval);
  positive("comm.init_timeout_seconds", config.comm.init_timeout_seconds);  // 0 would wait forever on a lost rank
  positive("comm.train_timeout_seconds", config.comm.train_timeout_seconds);
  positive("parallelism.pipeline_parallel_microbatch_size", config.parallelism.pipeline_parallel_microbatch_size);
  if (config.training.global_batch_size != -1) positive("training.global_batch_size", config.training.global_batch_size);
  if (config.lr_scheduler.total_steps) positive("lr_scheduler.total_steps", *config.lr_scheduler.total_steps);
  if (config.lr_scheduler.warmup_steps < 0)
    throw Err("lr_scheduler.warmup_steps must be >= 0, got " + std::to_string(config.lr_scheduler.warmup_steps));
  if (config.lr_scheduler.decay_ratio && (*config.lr_scheduler.decay_ratio < 0 || *config.lr_scheduler.decay_ratio > 1))
    throw Err("lr_scheduler.decay_ratio must be in [0, 1], got " + format_float(*config.lr_scheduler.decay_ratio));
  if (config.lr_scheduler.min_lr_factor < 0 || config.lr_scheduler.min_lr_factor > 1)
    throw Err("lr_scheduler.min_lr_factor must be in [0, 1], got " + format_float(config.lr_scheduler.min_lr_factor));
  if (!(config.optimizer.lr >= 0))  // 0 is an evaluation-only run, as PyTorch's AdamW allows
    throw Err("optimizer.lr must be >= 0, got " + format_float(config.optimizer.lr));
  non_negative("optimizer.weight_decay", config.optimizer.weight_decay);
  non_negative("optimizer.eps", config.optimizer.eps);
  non_negative("training.max_norm", config.training.max_norm);
  for (auto [name, beta] : {std::pair{"optimizer.beta1", config.optimizer.beta1}, {"optimizer.beta2", config.optimizer.beta2}})
    if (!(beta >= 0 && beta < 1)) throw Err(std::string(name) + " must be in [0, 1), got " + format_float(beta));
  if (config.checkpoint.keep_latest_k < 0 || config.checkpoint.keep_latest_k == 1)
    throw Err("checkpoint.keep_latest_k must be 0 (keep all) or >= 2, got " + std::to_string(config.checkpoint.keep_latest_k));
  if (config.job.dump_folder.empty()) throw Err("job.dump_folder must not be empty");
  positive("checkpoint.hf_max_shard_size_mb", config.checkpoint.hf_max_shard_size_mb);
  if (config.validation.steps <= 0 && config.validation.steps != -1)  // TorchTitan's __post_init__
    throw Err("validation.steps must be positive or -1 (the whole dataset), got " + std::to_string(config.validation.steps));
  if (const auto& v = config.validation; v.enable) {
    positive("validation.local_batch_size", v.local_batch_size);
    positive("validation.seq_len", v.seq_len);
    positive("validation.freq", v.freq);
  }
  if (const auto& p = config.profiling; p.enable_profiling) {  // torch.profiler.schedule's wait must be >= 0
    positive("profiling.profiler_active", p.profiler_active);
    if (p.profiler_warmup < 0)
      throw Err("profiling.profiler_warmup must be >= 0, got " + std::to_string(p.profiler_warmup));
    if (p.profile_freq < p.profiler_warmup + p.profiler_active)
      throw Err("profiling.profile_freq " + std::to_string(p.profile_freq) +
                " must be >= profiling.profiler_warmup + profiling.profiler_active = " +
                std::to_string(p.profiler_warmup + p.profiler_active));
  }
  return warnings;
}

}  // namespace titan
