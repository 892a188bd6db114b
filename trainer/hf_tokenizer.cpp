#include "trainer/hf_tokenizer.h"

#include <algorithm>
#include <stdexcept>

namespace titan {

HfTokenizer::HfTokenizer(const std::string& assets_path) : file_(read_hf_tokenizer(assets_path)) {
  for (const auto& a : file_.added)
    if (!a.content.empty()) passes_[a.normalized ? 1 : 0][static_cast<unsigned char>(a.content[0])].push_back(&a);
  for (auto& pass : passes_)
    for (auto& list : pass)
      std::stable_sort(list.begin(), list.end(),
                       [](auto* a, auto* b) { return a->content.size() > b->content.size(); });
  // What the post-processor's template adds around every text.
  auto in_template = [&](int64_t id) {
    const auto& before = file_.template_before;
    const auto& after = file_.template_after;
    return std::find(before.begin(), before.end(), id) != before.end() ||
           std::find(after.begin(), after.end(), id) != after.end();
  };
  adds_bos_ = in_template(file_.bos_id);
  adds_eos_ = in_template(file_.eos_id);
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (bos && !adds_bos_) ids.push_back(file_.bos_id);
  ids.insert(ids.end(), file_.template_before.begin(), file_.template_before.end());
  split_added(text, 0, &ids);
  ids.insert(ids.end(), file_.template_after.begin(), file_.template_after.end());
  if (eos && !adds_eos_) ids.push_back(file_.eos_id);
  return ids;
}

// Leftmost-longest added tokens of this pass; the text between them goes to the next pass.
void HfTokenizer::split_added(std::string_view text, size_t pass, std::vector<int64_t>* out) const {
  auto rest = [&](std::string_view piece) {
    if (pass == 0) return split_added(piece, 1, out);
    pre_tokenize(0, piece, out);
  };
  const auto& index = passes_[pass];
  size_t gap = 0;
  for (size_t pos = 0; pos < text.size(); ++pos) {
    const auto& candidates = index[static_cast<unsigned char>(text[pos])];
    for (const HfAddedToken* token : candidates) {
      if (text.compare(pos, token->content.size(), token->content) != 0) continue;
      if (pos > gap) rest(text.substr(gap, pos - gap));
      out->push_back(token->id);
      gap = pos + token->content.size();
      pos = gap - 1;
      break;
    }
  }
  if (gap < text.size()) rest(text.substr(gap));
}

void HfTokenizer::pre_tokenize(size_t step, std::string_view piece, std::vector<int64_t>* out) const {
  if (piece.empty()) return;
  if (step == file_.pre_steps.size()) return file_.model->encode(piece, out);
  if (const auto& split = file_.pre_steps[step])
    return split->split(piece, [&](std::string_view sub) { pre_tokenize(step + 1, sub, out); });
  if (piece.front() == ' ') return pre_tokenize(step + 1, piece, out);  // ByteLevel's add_prefix_space
  const std::string spaced = " " + std::string(piece);
  pre_tokenize(step + 1, spaced, out);
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size() || !file_.known[static_cast<size_t>(id)])
      throw std::invalid_argument("tokenizer " + file_.path + " has no token id " + std::to_string(id));
    text += file_.token_bytes[static_cast<size_t>(id)];
  }
  return text;
}

}  // namespace titan
