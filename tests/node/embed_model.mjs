// The small BERT embedding model of the embeddings and endpoint tests: the
// bert fixture (tests/fixtures/hf/bert: 2 layers, 64 dims, 128 positions,
// 512 ids; transformers' golden CLS/mean vectors) in a temporary folder with
// a WordPiece tokenizer.json and sentence-transformers files asking for CLS
// pooling and normalisation, as BGE's do. makeEmbedModel() returns the
// folder; the caller removes it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './server_util.mjs';

const fixture = path.join(repoRoot, 'tests', 'fixtures', 'hf', 'bert');

// A WordPiece tokenizer.json over the fixture's 512 ids: [PAD] 0, [CLS] 1,
// [SEP] 2 (as in golden.json), [UNK] 3, [MASK] 4, then letters, pieces,
// digits, a few words, fillers.
function writeTokenizer(d) {
  const vocab = {};
  let id = 0;
  const add = (t) => { if (!(t in vocab)) vocab[t] = id++; };
  ['[PAD]', '[CLS]', '[SEP]', '[UNK]', '[MASK]'].forEach(add);
  for (const c of 'abcdefghijklmnopqrstuvwxyz') { add(c); add('##' + c); }
  for (const c of '0123456789.,!?') add(c);
  ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dog', 'hello', 'world', '##s'].forEach(add);
  for (let k = 0; id < 512; k++) add(`[unused${k}]`);
  const special = (i, t) => ({ id: i, content: t, single_word: false, lstrip: false, rstrip: false,
    normalized: false, special: true });
  const tok = {
    version: '1.0',
    added_tokens: ['[PAD]', '[CLS]', '[SEP]', '[UNK]', '[MASK]'].map((t, i) => special(i, t)),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true,
      strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 2], cls: ['[CLS]', 1] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##',
      max_input_chars_per_word: 100, vocab },
  };
  fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(tok));
}

export function makeEmbedModel() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-bge-'));
  for (const f of ['config.json', 'model.safetensors']) fs.symlinkSync(path.join(fixture, f), path.join(d, f));
  writeTokenizer(d);
  fs.writeFileSync(path.join(d, 'modules.json'), JSON.stringify([
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
    { idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.models.Normalize' },
  ]));
  fs.mkdirSync(path.join(d, '1_Pooling'));
  fs.writeFileSync(path.join(d, '1_Pooling', 'config.json'), JSON.stringify({
    word_embedding_dimension: 64, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false,
    pooling_mode_max_tokens: false, pooling_mode_mean_sqrt_len_tokens: false,
  }));
  return d;
}
