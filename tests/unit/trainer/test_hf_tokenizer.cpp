// The tokenizer.json tokenizer against the real `tokenizers` package: folders trained and encoded
// by tests/reference/hf_tokenizer_reference.py at test time, our ids and decodes compared with its.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/unit/reference_fixture.h"
#include "trainer/hf_tokenizer.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using titan::testing::source_path;

// The reference folders (llama3/, bytelevel/), made once per test process and removed at its end.
struct ReferenceDir {
  fs::path path = fs::temp_directory_path() / ("titan_hf_tokenizer_" + std::to_string(getpid()));
  ReferenceDir() {
    const char* env = std::getenv("TITAN_PYTHON");
    const std::string python = env ? env : source_path(".venv/bin/python");
    const std::string cmd = python + " " + source_path("tests/reference/hf_tokenizer_reference.py") + " " +
                            source_path("tests/assets/janeausten/janeausten.txt") + " " + path.string() + " >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("the reference generator failed: " + cmd);
  }
  ~ReferenceDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const fs::path& reference_dir() {
  static const ReferenceDir dir;
  return dir.path;
}

json expected(const std::string& name) {
  std::ifstream in(reference_dir() / name / "expected.json");
  return json::parse(in);
}

// Checks every reference text of folder `name`; `round_trip`: decode gives the text back.
void expect_same_as_package(const std::string& name, bool round_trip) {
  HfTokenizer tok((reference_dir() / name).string());
  const json ref = expected(name);
  EXPECT_EQ(tok.vocab_size(), ref["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok.bos_id(), ref["bos_id"].get<int64_t>());
  EXPECT_EQ(tok.eos_id(), ref["eos_id"].get<int64_t>());
  for (const auto& c : ref["cases"]) {
    const auto text = c["text"].get<std::string>();
    const auto ids = tok.encode(text, true, true);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int64_t>>()) << name << ": " << text.substr(0, 200);
    EXPECT_EQ(tok.decode(c["plain_ids"].get<std::vector<int64_t>>()), c["decoded"].get<std::string>())
        << text.substr(0, 200);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids.front(), tok.bos_id());
    EXPECT_EQ(ids.back(), tok.eos_id());
    if (round_trip) EXPECT_EQ(tok.decode(std::vector<int64_t>(ids.begin() + 1, ids.end() - 1)), text);
  }
}

TEST(HfTokenizer, Llama3FormatMatchesTheTokenizersPackage) {
  // Split regex + ByteLevel, ignore_merges, specials after the BPE vocab, BOS from the template.
  expect_same_as_package("llama3", true);
}

TEST(HfTokenizer, PlainByteLevelMatchesTheTokenizersPackage) {
  // GPT-2 regex, add_prefix_space, merges always, BOS/EOS added from tokenizer_config.json.
  expect_same_as_package("bytelevel", false);
}

TEST(HfTokenizer, BytesThatAreNotUtf8SurviveTheRoundTrip) {
  HfTokenizer tok((reference_dir() / "llama3").string());
  const std::string text = "ok \xff\xfe caf\xc3 \xe6\x97 end\xf0";
  const auto ids = tok.encode(text, false, false);
  EXPECT_EQ(tok.decode(std::vector<int64_t>(ids.begin() + 1, ids.end())), text);  // after the template's BOS
}

TEST(HfTokenizer, SameIdsFromManyThreads) {
  HfTokenizer tok((reference_dir() / "llama3").string());
  const json ref = expected("llama3");
  const auto& c = ref["cases"].back();  // the corpus chunk
  std::vector<std::vector<int64_t>> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = tok.encode(c["text"].get<std::string>(), true, true); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, c["ids"].get<std::vector<int64_t>>());
}

TEST(HfTokenizer, TokenizerJsonIsChosenOverTokenizerModelAndSaidSo) {
  const fs::path both = fs::temp_directory_path() / "titan_hf_tokenizer_both";
  fs::create_directories(both);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(reference_dir() / "llama3" / f, both / f, fs::copy_options::overwrite_existing);
  fs::copy_file(source_path("tests/assets/tokenizer/tokenizer.model"), both / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  std::string note;
  auto tok = load_tokenizer(both.string(), &note);
  EXPECT_NE(dynamic_cast<HfTokenizer*>(tok.get()), nullptr);
  EXPECT_NE(note.find("holds tokenizer.json and tokenizer.model: using tokenizer.json"), std::string::npos) << note;
  fs::remove(both / "tokenizer.json");
  note.clear();
  EXPECT_EQ(dynamic_cast<HfTokenizer*>(load_tokenizer(both.string(), &note).get()), nullptr);
  EXPECT_EQ(note, "");
}

// A copy of the llama3 folder with tokenizer.json (or tokenizer_config.json) edited by `edit`.
std::string edited(const std::string& name, const std::string& file, const std::function<void(json&)>& edit) {
  const fs::path dir = fs::temp_directory_path() / ("titan_hf_tokenizer_bad_" + name);
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::ifstream in(reference_dir() / "llama3" / f);
    json j = json::parse(in);
    if (file == f) edit(j);
    std::ofstream(dir / f) << j.dump();
  }
  return dir.string();
}

TEST(HfTokenizer, BadFilesAreOneLineErrorsNamingFileAndField) {
  auto expect_error = [](const std::string& dir, const std::string& needle) {
    try {
      HfTokenizer tok(dir);
      ADD_FAILURE() << "no error for " << dir;
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(needle), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  };
  const std::string tj = "tokenizer.json", tc = "tokenizer_config.json";
  expect_error(edited("type", tj, [](json& j) { j["model"]["type"] = "WordPiece"; }),
               "bad_type/tokenizer.json: model.type 'WordPiece' is not supported (valid: BPE)");
  expect_error(edited("merge", tj,
                      [](json& j) {
                        j["model"]["merges"][3] = json::array({"zz\xc3\xa9q", "e"});
                      }),
               "bad_merge/tokenizer.json: model.merges[3] names 'zz\xc3\xa9q', which is not in model.vocab");
  expect_error(edited("vocab", tj, [](json& j) { j["model"].erase("vocab"); }),
               "bad_vocab/tokenizer.json: field 'model.vocab' is missing");
  expect_error(edited("split", tj, [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
               "tokenizer.json: pre_tokenizer.pretokenizers[0].behavior 'Removed' is not supported (valid: Isolated)");
  expect_error(
      edited("regex", tj, [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}"; }),
      "tokenizer.json: pre_tokenizer.pretokenizers[0].pattern: regex '(\\p{L}' does not compile");
  expect_error(edited("normalizer", tj,
                      [](json& j) {
                        j["normalizer"] = {{"type", "NFC"}};
                      }),
               "tokenizer.json: normalizer.type 'NFC' is not supported (valid: null)");
  expect_error(edited("post", tj,
                      [](json& j) {
                        j["post_processor"] = {{"type", "RobertaProcessing"}};
                      }),
               "post_processor.type 'RobertaProcessing' is not supported");
  expect_error(edited("added", tj, [](json& j) { j["added_tokens"][2]["id"] = 70000; }),
               "tokenizer.json: added_tokens[2].id of '<|reserved_special_token_0|>' is 70000, but the tokenizers "
               "package gives it 1905");
  expect_error(edited("eos", tc, [](json& j) { j.erase("eos_token"); }),
               "bad_eos/tokenizer_config.json: field 'eos_token' is missing");
  const std::string no_config = edited("config", tj, [](json&) {});
  fs::remove(fs::path(no_config) / tc);
  expect_error(no_config, "has tokenizer.json but no tokenizer_config.json");
}

}  // namespace
}  // namespace titan
