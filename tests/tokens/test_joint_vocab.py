import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.types import Catalog
from lrm.tokens.joint_vocab import (JointVocab, Special, Text, catalog_texts, make_joint_vocab,
                                    train_bpe)

TITLES = ["Crème brûlée lip balm", "Nail polish, red 0.5 oz", "Shampoo & conditioner",
          "Eau de toilette 😀", "日本の化粧水", "Beard oil\tfor men"]


@pytest.fixture(scope="module")
def catalog():
  return Catalog(item_ids=np.arange(1, 7), fields={
      "title": TITLES,
      "brand": ["Fresh", "OPI", None, "Chanel", "", "Acme"],
      "categories": [["Makeup", "Lips"], ["Makeup", "Nails"], ["Hair"], ["Fragrance"], [], None]})


@pytest.fixture(scope="module")
def vocab(catalog):
  return make_joint_vocab(catalog, (8, 4, 3), bpe_vocab_size=400, bpe_min_frequency=1,
                          num_sentinels=4)


def test_bpe_text_round_trip_is_exact(vocab):
  texts = TITLES + ["", " leading and trailing  ", "new\nline\r\n", "naïve café, Ångström",
                    "🧴💅🏽 emoji with skin tone", "Ελληνικά και русский",
                    "literal <pad> <eos> [SEP]",
                    "\x00 control \x7f", "e\u0301 (decomposed) vs \u00e9"]
  for text in texts:
    ids = vocab.encode_text(text)
    assert ids.dtype == np.int32
    assert ((ids > 0) & (ids < vocab.text_size)).all(), text
    assert vocab.decode_text(ids) == text
  # A literal special-token string is text, not the special token.
  assert vocab.pad not in vocab.encode_text("<pad>")


def test_layout(vocab):
  assert vocab.pad == 0 and vocab.tokenizer.id_to_token(0) == "<pad>"
  assert vocab.special_offset == vocab.text_size
  specials = [vocab.special(n) for n in vocab.special_names]
  assert specials == list(range(vocab.text_size, vocab.sid_offset))
  assert vocab.bos == vocab.text_size and vocab.eos == vocab.text_size + 1
  assert vocab.task("next") != vocab.task("masked") and vocab.sentinel(3) < vocab.sid_offset
  tasks = [vocab.task(t) for t in ("sid2text", "text2sid", "next", "masked", "history")]
  assert len(set(tasks)) == 5 and max(tasks) < vocab.sid_offset
  assert vocab.decode([vocab.task("history")]) == ["<task:history>"]
  assert vocab.level_offsets == (0, 8, 12)
  assert vocab.size == vocab.sid_offset + 8 + 4 + 3
  assert vocab.padded_size % 128 == 0 and vocab.size <= vocab.padded_size < vocab.size + 128
  codes = np.array([[0, 0, 0], [7, 3, 2], [5, 1, 0]])
  tokens = vocab.sid_tokens(codes)
  np.testing.assert_array_equal(tokens, vocab.sid_offset + np.array([0, 8, 12]) + codes)
  np.testing.assert_array_equal(vocab.codes_of(tokens), codes)
  np.testing.assert_array_equal(vocab.level_of(tokens), [[0, 1, 2]] * 3)
  assert vocab.level_of([0, vocab.eos, vocab.size, vocab.size - 1]).tolist() == [-1, -1, -1, 2]
  s = vocab.level_slice(1)
  assert (s.start, s.stop) == (vocab.sid_offset + 8, vocab.sid_offset + 12)
  # The same code at two levels is two tokens.
  assert vocab.sid_tokens([1, 1])[0] != vocab.sid_tokens([1, 1])[1]


def test_sid_errors(vocab):
  with pytest.raises(DataError, match="level 1"):
    vocab.sid_tokens([0, 4, 0])
  with pytest.raises(DataError, match="levels"):
    vocab.sid_tokens([0, 0, 0, 0])
  tokens = vocab.sid_tokens([1, 2, 0])
  with pytest.raises(DataError, match="column 0"):
    vocab.codes_of(tokens[::-1])
  with pytest.raises(DataError, match="not text tokens"):
    vocab.decode_text([vocab.eos])


def test_mixed_round_trip(vocab):
  segments = ["<bos>", "<task:sid2text>", (3, 1, 2), "<sep>", "<field:title>", "Crème 😀",
              "<field:brand>", "OPI", (5,), (5, 2), "<extra_0>", (0, 0, 0), "<eos>"]
  ids = vocab.encode(segments)
  decoded = vocab.decode(ids)
  assert decoded == segments
  assert isinstance(decoded[0], Special) and isinstance(decoded[5], Text)
  np.testing.assert_array_equal(vocab.encode(decoded), ids)
  assert ids[2:5].tolist() == vocab.sid_tokens([3, 1, 2]).tolist()
  # Text that reads like a special name stays text when marked as Text, and survives decoding.
  literal = vocab.encode([Text("<eos>"), Special("<eos>")])
  assert literal[-1] == vocab.eos and vocab.eos not in literal[:-1]
  assert vocab.decode(literal) == ["<eos>", "<eos>"]
  np.testing.assert_array_equal(vocab.encode(vocab.decode(literal)), literal)
  # Adjacent text segments come back as one run.
  assert vocab.decode(vocab.encode(["ab", "cd"])) == ["abcd"]


def test_decode_rejects_bad_ids(vocab):
  with pytest.raises(DataError, match="not in the vocabulary"):
    vocab.decode([vocab.size])                       # a padding row
  with pytest.raises(DataError, match="does not follow"):
    vocab.decode(vocab.sid_tokens([1, 2, 0])[1:])   # a SID starting at level 1
  with pytest.raises(DataError, match="SID tuple"):
    vocab.encode([3.5])
  with pytest.raises(DataError, match="unknown special"):
    vocab.special("<nope>")


def test_save_load(vocab, tmp_path):
  vocab.save(tmp_path)
  assert (tmp_path / "tokenizer.json").is_file()
  loaded = JointVocab.load(tmp_path)
  assert loaded.to_json() == vocab.to_json()
  segments = ["<bos>", "naïve café 😀", (7, 3, 2), "<eos>"]
  np.testing.assert_array_equal(loaded.encode(segments), vocab.encode(segments))
  assert loaded.decode(loaded.encode(segments)) == segments
  # A replaced tokenizer.json is caught.
  other = train_bpe(["something else entirely"] * 3, vocab_size=300, min_frequency=1)
  (tmp_path / "tokenizer.json").write_text(other.to_str())
  with pytest.raises(DataError, match="text_size"):
    JointVocab.load(tmp_path)


def test_extend_keeps_old_ids_meaning(vocab):
  grown, old_to_new = vocab.extend_sid_levels((8, 6, 5, 2))
  assert grown.num_levels == 4 and old_to_new.shape == (vocab.padded_size,)
  np.testing.assert_array_equal(old_to_new[:vocab.sid_offset], np.arange(vocab.sid_offset))
  assert (old_to_new[vocab.size:] == -1).all()
  # Every old SID token maps to the new token of the same (level, code).
  for level in range(vocab.num_levels):
    old_ids = np.arange(vocab.level_slice(level).start, vocab.level_slice(level).stop)
    new_ids = old_to_new[old_ids]
    assert (grown.level_of(new_ids) == level).all()
    np.testing.assert_array_equal(new_ids - grown.level_slice(level).start,
                                  old_ids - vocab.level_slice(level).start)
  segments = ["<bos>", "Shampoo 😀", (7, 3, 2), (1,), "<extra_2>", "<eos>"]
  old = vocab.encode(segments)
  assert grown.decode(old_to_new[old]) == segments
  np.testing.assert_array_equal(grown.encode(segments), old_to_new[old])
  assert len(set(old_to_new[:vocab.size].tolist())) == vocab.size   # injective
  with pytest.raises(ConfigError, match="new_codebook_sizes"):
    vocab.extend_sid_levels((8, 3, 3))
  with pytest.raises(ConfigError, match="new_codebook_sizes"):
    vocab.extend_sid_levels((8, 4))


def _word_level(words):
  from tokenizers import Tokenizer, models, pre_tokenizers
  tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return tokenizer


def test_pad_detected_or_added_for_llama_and_qwen_style_tokenizers(tmp_path):
  # Llama: id 0 is "<unk>", no pad token -> a "<pad>" special is added after the text ids.
  llama = JointVocab(_word_level(["<unk>", "<s>", "lip", "balm"]), (4, 2))
  assert llama.pad_added and llama.pad == llama.text_size == 4
  assert llama.special_names[0] == "<pad>" and llama.bos == 5
  assert llama.is_text([0, 1, 2, 3]).all() and not llama.is_text([llama.pad]).any()
  segments = ["<bos>", "<unk> lip", (3, 1), "<eos>"]
  ids = llama.encode(segments)
  assert ids[1] == 0                                  # id 0 is text here, not padding
  assert llama.decode(ids) == segments
  # Qwen: id 0 is "!", a pad token further up is found by name.
  qwen = JointVocab(_word_level(["!", "lip", "<|pad|>", "balm"]), (4,))
  assert not qwen.pad_added and qwen.pad == 2 and qwen.decode_text([0, 1]) == "! lip"
  with pytest.raises(DataError, match="not text tokens"):
    qwen.decode_text([2])
  # An explicit pad id, and reserved rows for a checkpoint bigger than its tokenizer.
  explicit = JointVocab(_word_level(["!", "lip", "balm"]), (4,), pad_id=2, text_rows=10)
  assert explicit.pad == 2 and explicit.text_size == 10 and explicit.bos == 10
  explicit.save(tmp_path / "v")
  loaded = JointVocab.load(tmp_path / "v")
  assert (loaded.pad, loaded.text_size, loaded.sid_offset) == (2, 10, explicit.sid_offset)
  grown, old_to_new = llama.extend_sid_levels((5, 2))
  assert grown.pad == llama.pad and old_to_new[llama.pad] == grown.pad
  with pytest.raises(ConfigError, match="pad_id"):
    JointVocab(_word_level(["!", "lip"]), (4,), pad_id=7)


def test_bad_config():
  good = train_bpe(["abc"], vocab_size=300, min_frequency=1)
  with pytest.raises(ConfigError, match="codebook_sizes"):
    JointVocab(good, (4, 0))
  with pytest.raises(ConfigError, match="bpe_vocab_size"):
    train_bpe(["abc"], vocab_size=100)
  with pytest.raises(ConfigError, match="text_tokenizer"):
    make_joint_vocab(None, (4,))


def test_minilm_wordpiece_round_trip_up_to_normalisation(minilm_path):
  vocab = make_joint_vocab(None, (16, 16), text_tokenizer=str(minilm_path / "tokenizer.json"))
  assert vocab.text_kind == "pretrained" and vocab.text_size == 30522 and vocab.pad == 0
  normalizer = vocab.tokenizer.normalizer
  for text in ["Dr. Scholl's Quick Heat (Paraffin) Spa-Bath, 0.5 Oz!", "Crème  Brûlée\tBALM",
               "OPI Nail Lacquer [SEP] <eos>"]:
    decoded = vocab.decode_text(vocab.encode_text(text))
    # Exact up to MiniLM's normalisation (lower case, accents stripped) and its spacing.
    assert "".join(decoded.split()) == "".join(normalizer.normalize_str(text).split())
  assert "[UNK]" in vocab.decode_text(vocab.encode_text("emoji 😀"))
  segments = ["<bos>", "lip balm", (3, 15), "<eos>"]
  assert vocab.decode(vocab.encode(segments)) == segments
  assert vocab.sid_offset == 30522 + len(vocab.special_names)


def test_bpe_on_amazon_beauty_round_trips_every_title(shared_data):
  from lrm.data.layout import read_dataset
  catalog = read_dataset(shared_data / "amazon_beauty").catalog
  vocab = make_joint_vocab(catalog, (256, 256, 256, 8), bpe_vocab_size=8192)
  assert vocab.text_size == 8192 and vocab.padded_size % 128 == 0
  texts = catalog_texts(catalog, ("title", "brand", "categories"))
  ids = vocab.encode_texts(texts)
  assert [vocab.decode_text(x) for x in ids] == texts
  # Merges learnt from the catalog: far fewer tokens than bytes.
  assert sum(map(len, ids)) < 0.4 * sum(len(t.encode()) for t in texts)
