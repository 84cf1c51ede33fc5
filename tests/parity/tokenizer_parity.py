"""Aln's byte-level BPE tokenizer against the Python `tokenizers` library, id for id.

Usage: tokenizer_parity.py TOKENIZER_TOOL   (run from the repo root; ctest does)

Tokenizers: the real GPT-2 tokenizer.json (also re-saved with extra special / plain added tokens),
and Llama-3-style and Qwen2-style byte-level BPEs trained here on the repo texts (Split regex +
ByteLevel(use_regex=False), ByteLevel decoder, special tokens, a BOS template for Llama-3).
Texts: HH-RLHF dialogues, XSTest prompts, AdvBench goals, and a torture set. Checks: the
pre-tokenizer pieces, encode ids with and without the post-processor, decode (with and without
skipping specials), decode(encode(s)) == s wherever `tokenizers` round-trips too, the vocab size.
"""
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

GPT2 = "examples/data/tokenizers/gpt2/tokenizer.json"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def repo_texts():
    texts = []
    with gzip.open("examples/data/hh-rlhf/harmless-base/test_shared.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 150:
                break
            row = json.loads(line)
            texts += [row["chosen"], row["rejected"]] if i % 5 == 0 else [row["chosen"]]
    with open("examples/data/xstest/xstest_prompts_shared.csv", encoding="utf-8") as f:
        texts += [r["prompt"] for r in csv.DictReader(f)][:200]
    with open("examples/data/advbench/harmful_behaviors.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:120]
        texts += [r["goal"] for r in rows] + [r["target"] for r in rows[:30]]
    return texts


def torture_texts():
    t = [
        "", " ", "  ", "\n", "\t", "Hello world", " Hello world ", "hello   world", "a  b   c    d",
        "I'm here, it's fine; we're sure they've gone, I'll go, he'd stay.",
        "IT'S WE'RE THEY'VE I'M YOU'LL HE'D 'S 'T 'Re 'vE 'LL", "'ſ 'K 'ſt", "don't'll've''s",
        "tabs\tand\t\ttabs\t", "line\nbreak\r\nwindows\r\n\r\nend\n\n\n", "trailing spaces   ",
        "  \n  \n\t \r\n  x", "\r\r\n\n\r", " \n", "x \n", "a,\n\nb", "!!!\n\n", "?! \n",
        "1234567890 12 345 6789 3.14159 -42 1,000,000", "٣٤٥ ½ ⅓ Ⅻ ①②③ 𝟙𝟚", "x1y22z333w4444",
        "日本語のテキスト。中文文本，韩国어 텍스트", "Ελληνικά Русский текст עברית العربية",
        "emoji 😀😃 👍🏽 👨‍👩‍👧 🏳️‍🌈 ❤️", "combining e\u0301 a\u0300 n\u0303 \u0915\u094d\u0937 \u0e01\u0e34",
        "zero\u200bwidth\u200dj\ufeffbom", "nbsp\u00a0\u00a0x \u2003em\u3000ideo\u2028ls\u2029ps\x85nel",
        "ctrl \x1c\x1d\x1e\x1f \x00 \x07 \x7f", "mixed\t \u00a0\n \u3000 end", "      ",
        "<|endoftext|>", "a <|endoftext|> b", "a<|endoftext|>b", "x  <|endoftext|>  y", "<|endoftext|><|endoftext|>",
        "<|begin_of_text|>Hi<|eot_id|>", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        "<|start_header_id|>user<|end_header_id|>\n\nHey<|eot_id|>", "<|im_start|><|im_start|>", "<|im_star",
        "<|helpful_3|>safe<|helpful_3|>", "say hi there! hi therehi there", "<think>hmm</think> ok",
        "URL https://example.com/a?b=c&d=e#f email a.b@c.de", "code: def f(x):\n    return x**2  # sq\n",
        "{\"json\": [1, 2, {\"k\": null}]}", "$$\\sum_{i=1}^n i^2$$", "----====****____", "...!?;:",
        "MiXeD CaSe WoRdS", "Ünïcödé çäsé façade naïve", "ǅungla ǈ Σσς", "ſ long s", "Unicode 15: a\U00011f04b \U00031350\U0002ebf0x \U0001e030", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝",
        "NFC: e\u0301 \u212b \u2126 \u1100\u1161\u11a8 \u0958 a\u0301\u0328 a\u0328\u0301 e\u0304\u0301 \u1e9b\u0323",
        "decomposed Hangul \u1112\u1161\u11ab\u1100\u1173\u11af and composed \ud55c\uae00, caf\u0065\u0301 na\u0131\u0308ve",
        "a" * 300, "ab " * 100, " " * 50 + "x", "\n" * 20, "9" * 25, "\t \t \t\n",
    ]
    return t


def train(pattern, special, vocab_size, texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def variant(paths, tmp, base, name, edit):
    with open(paths[base], encoding="utf-8") as f:
        j = json.load(f)
    edit(j)
    paths[name] = os.path.join(tmp, name + ".json")
    with open(paths[name], "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def make_tokenizers(tmp, texts):
    paths = {"gpt2": GPT2}
    g = Tokenizer.from_file(GPT2)
    g.add_special_tokens(["<|helpful_3|>", "<|im_start|>"])
    g.add_tokens([AddedToken("hi there", normalized=False), AddedToken("<think>", normalized=True)])
    paths["gpt2+added"] = os.path.join(tmp, "gpt2_added.json")
    g.save(paths["gpt2+added"])

    llama = train(LLAMA3_RE, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>"], 1500, texts)
    bos = llama.token_to_id("<|begin_of_text|>")
    llama.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    paths["llama3-style"] = os.path.join(tmp, "llama3.json")
    llama.save(paths["llama3-style"])

    qwen = train(QWEN2_RE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 800, texts)
    qwen.add_tokens([AddedToken("<think>", normalized=False, special=False), "</think>"])
    qwen.post_processor = processors.ByteLevel(trim_offsets=False)
    paths["qwen2-style"] = os.path.join(tmp, "qwen2.json")
    qwen.save(paths["qwen2-style"])
    # Variants by editing the JSON: Llama-3's real file sets ignore_merges; ByteLevel with a prefix
    # space is the RoBERTa-style option.
    variant(paths, tmp, "llama3-style", "llama3-style-ignore-merges", lambda j: j["model"].update(ignore_merges=True))
    variant(paths, tmp, "gpt2", "gpt2-prefix-space", lambda j: j["pre_tokenizer"].update(add_prefix_space=True))
    # Qwen2's real tokenizer.json normalizes with NFC.
    variant(paths, tmp, "qwen2-style", "qwen2-style-nfc", lambda j: j.update(normalizer={"type": "NFC"}))
    variant(paths, tmp, "llama3-style", "llama3-style-prefix-space",
            lambda j: j["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True))
    # One file with legacy "a b" merge strings, to cover the other merges format end to end.
    with open(paths["qwen2-style"], encoding="utf-8") as f:
        j = json.load(f)
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    paths["qwen2-style-legacy-merges"] = os.path.join(tmp, "qwen2_legacy.json")
    with open(paths["qwen2-style-legacy-merges"], "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return paths


def nfc_cases():
    """Every code point that NFC could touch (a decomposition, a combining class, or a Hangul jamo or
    syllable), alone and after a base letter, plus seeded random strings of bases and marks."""
    import random
    import unicodedata
    touch = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and
             (unicodedata.decomposition(chr(cp)) or unicodedata.combining(chr(cp)) or 0x1100 <= cp <= 0x11FF or
              0xAC00 <= cp <= 0xD7A3)]
    texts = [chr(cp) for cp in touch] + ["a" + chr(cp) for cp in touch if unicodedata.combining(chr(cp))]
    rng = random.Random(5)
    marks = [cp for cp in touch if unicodedata.combining(chr(cp))]
    bases = [ord(c) for c in "aeiouAEOUnNcCsSzZ"] + [0x1100, 0x1161, 0x11A8, 0xAC00, 0x0915, 0x3046, 0x3099]
    for _ in range(3000):
        texts.append("".join(chr(rng.choice(marks if rng.random() < 0.5 else bases)) for _ in range(rng.randint(1, 8))))
    return texts


def check_nfc(tool, tmp):
    texts = nfc_cases()
    path = os.path.join(tmp, "nfc.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    run = subprocess.run([tool, "--nfc", path], capture_output=True, text=True, encoding="utf-8", check=True)
    ours = [json.loads(l) for l in run.stdout.split("\n") if l]
    import unicodedata
    bad = [t for t, o in zip(texts, ours, strict=True) if o != unicodedata.normalize("NFC", t)]
    for t in bad[:5]:
        print(f"FAIL nfc {t!r}: ours {ours[texts.index(t)]!r} python {unicodedata.normalize('NFC', t)!r}")
    print(f"{'ok  ' if not bad else 'FAIL'} nfc: {len(texts) - len(bad)}/{len(texts)} strings equal Python's "
          f"unicodedata.normalize('NFC') (Unicode {unicodedata.unidata_version})")
    return 1 if bad else 0


def main():
    tool = sys.argv[1]
    start = time.time()
    data = repo_texts()
    texts = data + torture_texts()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        failures += check_nfc(tool, tmp)
        paths = make_tokenizers(tmp, data)
        texts_path = os.path.join(tmp, "texts.jsonl")
        with open(texts_path, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        for name, path in paths.items():
            hf = Tokenizer.from_file(path)
            run = subprocess.run([tool, path, texts_path], capture_output=True, text=True, encoding="utf-8")
            if run.returncode != 0:
                print(f"FAIL {name}: tool exited {run.returncode}: {run.stderr}")
                failures += 1
                continue
            lines = [json.loads(l) for l in run.stdout.split("\n") if l]
            ours, meta = lines[:-1], lines[-1]
            bad = 0
            roundtrips = 0
            ntok = 0
            for text, o in zip(texts, ours, strict=True):
                enc = hf.encode(text).ids
                plain = hf.encode(text, add_special_tokens=False).ids
                ntok += len(plain)
                problems = []
                if o["ids"] != enc:
                    problems.append(f"ids\n  ours {o['ids'][:60]}\n  hf   {enc[:60]}")
                pieces = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
                if o["pieces"] != pieces:
                    problems.append(f"pre-tokenizer pieces\n  ours {o['pieces'][:20]}\n  hf   {pieces[:20]}")
                if o["ids_no_special"] != plain:
                    problems.append("ids without post-processor differ")
                hf_dec = hf.decode(plain, skip_special_tokens=False)
                if o["decoded"] != hf_dec:
                    problems.append(f"decode: ours {o['decoded'][:80]!r} hf {hf_dec[:80]!r}")
                if o["decoded_skip"] != hf.decode(enc, skip_special_tokens=True):
                    problems.append("decode(skip_special_tokens) differs")
                if hf_dec == text:
                    roundtrips += 1
                    if o["decoded"] != text:
                        problems.append("decode(encode(s)) != s")
                if problems:
                    bad += 1
                    if bad <= 5:
                        print(f"FAIL {name} text {text[:80]!r}: " + "; ".join(problems))
            if meta["vocab_size"] != hf.get_vocab_size(with_added_tokens=True):
                print(f"FAIL {name}: vocab size {meta['vocab_size']} vs {hf.get_vocab_size(with_added_tokens=True)}")
                bad += 1
            print(f"{'ok  ' if bad == 0 else 'FAIL'} {name}: {len(texts) - bad}/{len(texts)} texts identical "
                  f"({ntok} tokens), {roundtrips} exact round trips")
            failures += bad
    print(f"{time.time() - start:.1f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
