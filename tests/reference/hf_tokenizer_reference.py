#!/usr/bin/env python3
"""Hugging Face tokenizer.json folders made by the real `tokenizers` package, and its token ids.

Two byte-level BPE tokenizers are trained on the bundled corpus:
  llama3     Llama 3's pre-tokenizer (its Split regex, Isolated, then ByteLevel without regex),
             ignore_merges (with whole words in the vocabulary that no merge makes), Llama 3's special tokens appended after the BPE vocabulary, and a
             post-processor Sequence[ByteLevel, TemplateProcessing] that adds <|begin_of_text|>.
  bytelevel  plain ByteLevel (GPT-2 regex, add_prefix_space), merges always applied, no
             post-processor; tokenizer_config.json names BOS/EOS tokens absent from tokenizer.json,
             which TorchTitan's HuggingFaceTokenizer adds as new special tokens.
Each folder gets tokenizer.json, tokenizer_config.json and expected.json: for every text, the ids
TorchTitan's HuggingFaceTokenizer.encode(text, add_bos=True, add_eos=True) gives (the package's
encode plus BOS/EOS where its post-processor does not add them), the package's ids without special
tokens and its decode of them, and the vocabulary size and BOS/EOS ids.

Usage: .venv/bin/python tests/reference/hf_tokenizer_reference.py CORPUS OUT_DIR
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(6)]

TEXTS = [
    "",
    "Hello world",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    " leading space and trailing space ",
    "café naïve résumé Ångström façade",
    "東京は日本の首都です。中文测试，한국어 텍스트",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷!",
    "digits 1234567 12 3.14159 2024-01-31 007",
    "spaces   runs\t\ttabs \t mixed\n\nnewlines\r\nwindows  \n   \n end   ",
    "nbsp\u00a0here\u3000ideographic\u2003em\u0085nel\u2028ls",
    "It's I'LL they'd WE'RE you've I'm she'S",
    "punctuation...!!! ??? (parens) [brackets] {braces} \"quotes\" -- dashes",
    "<|begin_of_text|>Hello<|end_of_text|>world <|reserved_special_token_3|>x<|reserved_special_token_5|>",
    "a<|end_of_text|><|end_of_text|> <|begin_of_text|>\n<|not_special|> <s> </s>",
    "\n",
    "   ",
    "x\n\n\ny",
    "long runs " + "ab" * 3000 + " " * 4000 + "\t" * 3000 + "end" + "9" * 1000,
]


def train(corpus, pre_tokenizer, ignore_merges, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train([corpus], trainer)
    return tok


def with_whole_words(tok, words):
    """Vocabulary entries no merge makes, as Llama 3 has: only ignore_merges emits them."""
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for word in words:
        assert word not in vocab and len(tok.encode(word.replace("Ġ", " ")).ids) > 1, word
        vocab[word] = len(vocab)
    return Tokenizer.from_str(json.dumps(spec))


def llama3(corpus):
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok = train(corpus, pre, ignore_merges=True, vocab_size=1900)
    tok = with_whole_words(tok, ["Ġacknowledged", "Ġuniversally", "Ġpossession"])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    decoder = {
        str(tok.token_to_id(t)): dict(content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        for t in LLAMA3_SPECIALS
    }
    config = dict(
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        added_tokens_decoder=decoder,
        model_max_length=131072,
        tokenizer_class="PreTrainedTokenizerFast",
    )
    return tok, config


def bytelevel(corpus):
    pre = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok = train(corpus, pre, ignore_merges=False, vocab_size=1200)
    # As Hugging Face writes an AddedToken: a dict with "content".
    config = dict(bos_token=dict(__type="AddedToken", content="<s>", special=True), eos_token="</s>")
    return tok, config


def torchtitan_encode(tok, config, text):
    """HuggingFaceTokenizer.encode(text, add_bos=True, add_eos=True) at TorchTitan 238fa9953."""

    def name(key):
        value = config.get(key)
        return value["content"] if isinstance(value, dict) else value

    bos, eos = tok.token_to_id(name("bos_token")), tok.token_to_id(name("eos_token"))
    empty = tok.encode("").ids
    ids = tok.encode(text).ids
    if bos not in empty:
        ids.insert(0, bos)
    if eos not in empty:
        ids.append(eos)
    return ids


def write(out_dir, tok, config, texts):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # TorchTitan (_infer_special_tokens) adds the config's special tokens to the package's
    # tokenizer: new ids where absent.
    tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    names = [config[k]["content"] if isinstance(config[k], dict) else config[k] for k in ("bos_token", "eos_token")]
    added = []
    for value in [config[k] for k in ("bos_token", "eos_token")] + list(config.get("added_tokens_decoder", {}).values()):
        if isinstance(value, dict):
            added.append(AddedToken(value["content"], normalized=value.get("normalized", True), special=value.get("special", True)))
        else:
            added.append(AddedToken(value, special=True))
    tok.add_special_tokens(added)
    cases = []
    for text in texts:
        plain = tok.encode(text, add_special_tokens=False).ids
        cases.append(
            dict(
                text=text,
                ids=torchtitan_encode(tok, config, text),
                plain_ids=plain,
                decoded=tok.decode(plain, skip_special_tokens=False),
            )
        )
    expected = dict(
        vocab_size=tok.get_vocab_size(),
        bos_id=tok.token_to_id(names[0]),
        eos_id=tok.token_to_id(names[1]),
        cases=cases,
    )
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)


def main():
    corpus, out_dir = sys.argv[1], sys.argv[2]
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    texts = TEXTS + [text[100000:160000]]
    for name, make in (("llama3", llama3), ("bytelevel", bytelevel)):
        tok, config = make(corpus)
        write(os.path.join(out_dir, name), tok, config, texts)
    print(out_dir)


if __name__ == "__main__":
    main()
