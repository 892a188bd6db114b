// titan_tokenize: text/JSON-lines documents -> one 1-D .npy of token ids that titan_train reads
// as training.dataset_path. Documents get BOS/EOS exactly as in training (trainer/document_source);
// they are tokenized on every core and written in document order.
//   titan_tokenize --hf_assets_path DIR [--threads N] INPUT... -o OUT.npy
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "trainer/document_source.h"
#include "trainer/tokenizer.h"

namespace titan {
namespace {

constexpr size_t kHeaderSize = 128;  // magic + header, room for any element count

struct Args {
  std::string assets, output;
  std::vector<std::string> inputs;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
};

const char* const kUsage = "usage: titan_tokenize --hf_assets_path DIR [--threads N] INPUT... -o OUT.npy";

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value (" + kUsage + ")");
      return argv[++i];
    };
    if (arg == "--hf_assets_path") {
      a.assets = value();
    } else if (arg == "-o" || arg == "--output") {
      a.output = value();
    } else if (arg == "--threads") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n < 1) throw std::invalid_argument("--threads '" + v + "' is not a positive integer");
      a.threads = static_cast<unsigned>(n);
    } else if (arg == "-h" || arg == "--help") {
      std::puts(kUsage);
      std::exit(0);
    } else if (arg.rfind("-", 0) == 0) {
      throw std::invalid_argument("unknown option '" + arg + "' (" + kUsage + ")");
    } else {
      a.inputs.push_back(arg);
    }
  }
  if (a.assets.empty() || a.output.empty() || a.inputs.empty()) throw std::invalid_argument(kUsage);
  if (a.output.size() < 4 || a.output.compare(a.output.size() - 4, 4, ".npy") != 0)
    throw std::invalid_argument("output '" + a.output + "' must end in .npy");
  return a;
}

// A 1-D .npy header of `count` elements, padded to kHeaderSize as numpy pads (version 1.0).
std::string npy_header(const std::string& descr, uint64_t count) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + std::to_string(count) + ",), }";
  dict.resize(kHeaderSize - 10 - 1, ' ');
  dict += '\n';
  const auto len = static_cast<uint16_t>(dict.size());
  return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(len & 0xff) + static_cast<char>(len >> 8) + dict;
}

// Ids written as little-endian unsigned integers of `width` bytes.
void append(std::string* out, const std::vector<int64_t>& ids, int width) {
  for (int64_t id : ids) {
    const auto v = static_cast<uint32_t>(id);
    out->append(reinterpret_cast<const char*>(&v), static_cast<size_t>(width));
  }
}

// Tokenizes a batch of documents on `threads` threads; results in document order.
std::vector<std::vector<int64_t>> encode_batch(const Tokenizer& tok, const std::vector<std::string>& docs,
                                               unsigned threads) {
  std::vector<std::vector<int64_t>> ids(docs.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < docs.size();) ids[i] = encode_document(tok, docs[i]);
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return ids;
}

int run(const Args& args) {
  std::string note;
  const auto tok = load_tokenizer(args.assets, &note);
  if (!note.empty()) std::fprintf(stderr, "titan_tokenize: %s\n", note.c_str());
  const int width = tok->vocab_size() <= 65536 ? 2 : 4;
  const std::string descr = width == 2 ? "<u2" : "<u4";
  for (const auto& input : args.inputs)
    if (is_pretokenized_path(input)) throw std::invalid_argument("input '" + input + "' is already token ids (.npy)");

  const std::string partial = args.output + ".partial";
  std::ofstream out(partial, std::ios::binary);
  if (!out) throw std::invalid_argument("cannot write '" + partial + "': " + std::strerror(errno));
  out << npy_header(descr, 0);
  const bool tty = isatty(2);
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  uint64_t documents = 0, tokens = 0, bytes = 0;
  auto report = [&](bool final) {
    const auto now = std::chrono::steady_clock::now();
    if (!final && !tty && now - last_report < std::chrono::seconds(10)) return;
    last_report = now;
    const double s = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "%stitan_tokenize: %llu documents, %llu tokens, %.1f MB of text in %.1f s (%.2f MB/s)%s",
                 tty ? "\r" : "", static_cast<unsigned long long>(documents), static_cast<unsigned long long>(tokens),
                 static_cast<double>(bytes) / 1e6, s, static_cast<double>(bytes) / 1e6 / std::max(s, 1e-9),
                 final || !tty ? "\n" : "");
  };
  const size_t batch_bytes = size_t{4} << 20 << (args.threads > 1 ? 1 : 0);
  for (const auto& input : args.inputs) {
    auto source = open_document_source(input, tok.get());
    std::vector<std::string> docs;
    size_t held = 0;
    bool more = true;
    while (more) {
      std::string text;
      more = source->next_text(&text);
      if (more) held += text.size(), docs.push_back(std::move(text));
      if (docs.empty() || (more && held < batch_bytes && docs.size() < 100000)) continue;
      std::string chunk;
      for (const auto& ids : encode_batch(*tok, docs, args.threads)) append(&chunk, ids, width), tokens += ids.size();
      out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      documents += docs.size(), bytes += held;
      docs.clear(), held = 0;
      report(false);
    }
  }
  out.seekp(0);
  out << npy_header(descr, tokens);
  out.close();
  if (!out) throw std::invalid_argument("cannot write '" + partial + "': " + std::strerror(errno));
  std::filesystem::rename(partial, args.output);
  report(true);
  std::fprintf(stderr, "titan_tokenize: wrote %s (%s, %llu tokens; tokenizer %s, vocabulary %lld)\n",
               args.output.c_str(), width == 2 ? "uint16" : "uint32", static_cast<unsigned long long>(tokens),
               tok->path().c_str(), static_cast<long long>(tok->vocab_size()));
  return 0;
}

}  // namespace
}  // namespace titan

int main(int argc, char** argv) {
  titan::Args args;
  try {
    args = titan::parse(argc, argv);
    return titan::run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "titan_tokenize: error: %s\n", e.what());
    std::error_code ec;
    if (!args.output.empty()) std::filesystem::remove(args.output + ".partial", ec);
    return 1;
  }
}
