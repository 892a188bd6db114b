// Document sources, the global token stream and its cursor, per-rank batches, and the tokenizer
// (against the spm_encode command of the sentencepiece package).
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "tests/unit/reference_fixture.h"
#include "trainer/dataloader.h"
#include "trainer/sentencepiece_tokenizer.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using titan::testing::source_path;

fs::path temp_file(const std::string& name) {
  auto dir = fs::temp_directory_path() / "titan_dataloader_test";
  fs::create_directories(dir);
  return dir / name;
}

// A .npy file as numpy writes it: magic, version 1.0, header padded to 64 bytes, raw data.
template <class T>
std::string write_npy(const std::string& name, const std::string& descr, const std::vector<T>& values) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + std::to_string(values.size()) + ",), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  auto path = temp_file(name);
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out << header;
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  return path.string();
}

std::vector<int64_t> iota_tokens(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<int64_t> window(TokenStream& s) {
  std::vector<int64_t> w;
  s.next(&w);
  return w;
}

const std::string kTokenizerDir = "tests/assets/tokenizer";

std::vector<int64_t> spm_encode(const std::string& text) {
  const std::string cmd = "printf '%s\\n' '" + text + "' | spm_encode --output_format=id --model=" +
                          source_path(kTokenizerDir + "/tokenizer.model");
  FILE* pipe = popen(cmd.c_str(), "r");
  std::vector<int64_t> ids;
  long long id;
  while (pipe && std::fscanf(pipe, "%lld", &id) == 1) ids.push_back(id);
  if (pipe) pclose(pipe);
  return ids;
}

TEST(TokenStream, CutsSeqLenPlusOneWindowsAndCarriesTheRest) {
  // Two 1-D .npy chunks are one stream of 0..99; windows of 8 take 0-7, 8-15, ... (no overlap).
  auto path = write_npy("iota.npy", "<i4", std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
  TokenStream s(open_document_source(path, nullptr), 8);
  EXPECT_EQ(window(s), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(window(s), (std::vector<int64_t>{8, 9, 10, 11, 12, 13, 14, 15}));
  // 16..19 then the data loops: 0..3.
  EXPECT_EQ(window(s), (std::vector<int64_t>{16, 17, 18, 19, 0, 1, 2, 3}));
  EXPECT_EQ(s.cursor().epoch, 1);
  EXPECT_EQ(s.cursor().windows, 3);
}

TEST(TokenStream, RestoredCursorContinuesTheSameStream) {
  SentencePieceTokenizer tok(source_path(kTokenizerDir));
  const std::string corpus = source_path("tests/assets/janeausten/janeausten.txt");
  TokenStream a(open_document_source(corpus, &tok), 65);
  for (int i = 0; i < 5; ++i) window(a);
  DataCursor saved = a.cursor();
  auto expected = window(a);
  TokenStream b(open_document_source(corpus, &tok), 65);
  b.restore(saved);
  EXPECT_EQ(window(b), expected);
  EXPECT_EQ(b.cursor().windows, 6);
  EXPECT_GT(saved.documents, 0);
}

TEST(DataLoader, RanksSplitTheGlobalStream) {
  auto path = write_npy("iota_i8.npy", "<i8", iota_tokens(1000));
  // One rank with batch 4 sees windows 0..3; two ranks with batch 2 see {0,1} and {2,3}.
  DataLoader one(std::make_unique<TokenStream>(open_document_source(path, nullptr), 5), 4, 4, 0, 1, 1000);
  DataLoader r0(std::make_unique<TokenStream>(open_document_source(path, nullptr), 5), 2, 4, 0, 2, 1000);
  DataLoader r1(std::make_unique<TokenStream>(open_document_source(path, nullptr), 5), 2, 4, 1, 2, 1000);
  Batch all = *one.next(), b0 = *r0.next(), b1 = *r1.next();
  EXPECT_TRUE(torch::equal(torch::cat({b0.input, b1.input}), all.input));
  EXPECT_TRUE(torch::equal(torch::cat({b0.labels, b1.labels}), all.labels));
  EXPECT_EQ(all.input[1][0].item<int64_t>(), 5);
  EXPECT_EQ(all.labels[1][0].item<int64_t>(), 6);  // labels are the inputs shifted by one
  EXPECT_EQ(all.input.sizes(), (std::vector<int64_t>{4, 4}));
}

TEST(DataLoader, FiniteDataEndsWithoutItsIncompleteLastGlobalBatch) {
  // 100 tokens make 20 windows of 5: 2 global batches of 2 ranks x 4, then 4 windows left over.
  auto path = write_npy("iota_finite.npy", "<i8", iota_tokens(100));
  for (int64_t rank : {0, 1}) {
    DataLoader dl(std::make_unique<TokenStream>(open_document_source(path, nullptr), 5, /*infinite=*/false), 4, 4, rank, 2,
                  1000);
    ASSERT_TRUE(dl.next().has_value());
    auto second = dl.next();
    ASSERT_TRUE(second.has_value());
    EXPECT_EQ(second->input[0][0].item<int64_t>(), 5 * (8 + 4 * rank));
    EXPECT_FALSE(dl.next().has_value());
  }
}

TEST(DataLoader, TokenOutsideVocabularyIsAnError) {
  auto path = write_npy("big_ids.npy", "<u4", std::vector<uint32_t>(100, 5000));
  DataLoader dl(std::make_unique<TokenStream>(open_document_source(path, nullptr), 9), 1, 8, 0, 1, 2048);
  try {
    dl.next();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("holds token id 5000, outside the model's vocabulary [0, 2048)"), std::string::npos);
  }
}

TEST(DocumentSource, BadInputsAreClearErrors) {
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      SentencePieceTokenizer tok(source_path(kTokenizerDir));
      TokenStream s(open_document_source(path, &tok), 4);
      for (int i = 0; i < 100; ++i) s.next(nullptr);
      FAIL() << path;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("/nonexistent/data.txt", "dataset path '/nonexistent/data.txt' does not exist");
  std::ofstream(temp_file("empty.txt")).close();
  expect_error(temp_file("empty.txt").string(), "is empty (no documents)");
  std::ofstream(temp_file("bad.jsonl")) << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  expect_error(temp_file("bad.jsonl").string(), "bad.jsonl:2: a JSON line needs a string \"text\" field");
  std::ofstream(temp_file("data.csv")) << "a,b\n";
  expect_error(temp_file("data.csv").string(), "has an unknown type");
  std::ofstream(temp_file("bad.npy")) << "not numpy";
  expect_error(temp_file("bad.npy").string(), "not a .npy file");
  write_npy("floats.npy", "<f4", std::vector<float>{1.0f});
  expect_error(temp_file("floats.npy").string(), "dtype 'f4' is not a token type");
  // Text and token files in one folder: the .npy ones would be skipped silently.
  const fs::path mixed = temp_file("mixed_dataset");
  fs::create_directories(mixed);
  std::ofstream(mixed / "a.txt") << "some text\n";
  fs::copy_file(temp_file("floats.npy"), mixed / "b.npy", fs::copy_options::overwrite_existing);
  expect_error(mixed.string(), "dataset folder '" + mixed.string() + "' holds .npy token files (b.npy), which would not "
                               "be read: give one .npy file as training.dataset_path, or a folder of text");
}

TEST(DocumentSource, TextJsonlAndGzipDocumentsGetBosAndEos) {
  SentencePieceTokenizer tok(source_path(kTokenizerDir));
  const std::vector<std::string> docs = {"It is a truth universally acknowledged.", "Emma Woodhouse, handsome, clever."};
  auto expected = [&](const std::string& d) { return tok.encode(d, true, true); };
  auto read_all = [](DocumentSource& s) {
    std::vector<std::vector<int64_t>> out;
    std::vector<int64_t> t;
    while (s.next(&t)) out.push_back(t);
    return out;
  };
  // One document per line when the file has no blank line.
  std::ofstream(temp_file("lines.txt")) << docs[0] << "\n" << docs[1] << "\n";
  auto lines = open_document_source(temp_file("lines.txt").string(), &tok);
  EXPECT_EQ(read_all(*lines), (std::vector<std::vector<int64_t>>{expected(docs[0]), expected(docs[1])}));
  // Paragraph blocks when it has: wrapped lines of one paragraph are one document.
  std::ofstream(temp_file("paras.txt")) << "It is a truth\nuniversally acknowledged.\n\n" << docs[1] << "\n";
  auto paras = open_document_source(temp_file("paras.txt").string(), &tok);
  auto got = read_all(*paras);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], expected("It is a truth\nuniversally acknowledged."));
  // C4-style JSON lines, gzip-compressed.
  gzFile gz = gzopen(temp_file("c4.json.gz").c_str(), "wb");
  for (const auto& d : docs) gzprintf(gz, "{\"text\": \"%s\", \"url\": \"x\"}\n", d.c_str());
  gzclose(gz);
  auto json = open_document_source(temp_file("c4.json.gz").string(), &tok);
  EXPECT_EQ(read_all(*json), (std::vector<std::vector<int64_t>>{expected(docs[0]), expected(docs[1])}));
}

TEST(Tokenizer, MatchesSpmEncodeAndAddsBosEos) {
  SentencePieceTokenizer tok(source_path(kTokenizerDir));
  const std::string text = "It is a truth universally acknowledged, that a single man";
  auto reference = spm_encode(text);
  ASSERT_FALSE(reference.empty()) << "spm_encode (package sentencepiece) did not run";
  auto ids = tok.encode(text, true, true);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
  EXPECT_EQ(std::vector<int64_t>(ids.begin() + 1, ids.end() - 1), reference);
  EXPECT_EQ(tok.decode(reference), text);
  EXPECT_LE(tok.vocab_size(), 2048);  // fits the debugmodel
}

TEST(Tokenizer, MissingFolderOrModelIsAnError) {
  EXPECT_THROW(load_tokenizer("/nonexistent"), std::invalid_argument);
  EXPECT_THROW(load_tokenizer(fs::temp_directory_path().string()), std::invalid_argument);
}

}  // namespace
}  // namespace titan
