// Hard strings for the tokenizer comparison (tests/node/tokenizer_compare.mjs).
//
// A hand-written list of cases that break tokenizers (whitespace runs,
// newlines and CRLF, digits, contractions, accents in NFC and NFD, CJK,
// Arabic/Hebrew/Thai/Devanagari, emoji with ZWJ and modifiers, added tokens
// inside text, very long words), plus deterministic combinations of
// fragments. Every string is valid Unicode.
//
// U+FEFF and U+0085 are where regex engines disagree about \s: Hugging
// Face's tokenizers (Rust, Oniguruma) and vkpt use Unicode White_Space
// (with U+0085, without U+FEFF); the JavaScript port rewrites \s in Split
// regexes the same way, but its ByteLevel(use_regex) pre-tokenizer uses
// JavaScript's own \s (with U+FEFF, without U+0085). `byteLevelRegexDiffers`
// lists those strings so the comparison can leave them out for tokenizers
// that split with ByteLevel's regex; test_tokenizer.c pins vkpt's (Rust's)
// behaviour for them.

const handwritten = [
  // whitespace
  '', ' ', '  ', '   ', '\t', '\n', '\n\n', '\n\n\n', '\t\n', ' \n ', '\r\n', '\r\n\r\n', 'a\r\nb', 'line1\rline2',
  'Hello world', ' Hello world', 'Hello World', ' Hello World!', 'Hello, world!', '  Hello', '   Hello',
  '    Hello\n    Hello', 'Hello    ', 'trailing spaces   \n', '\n\n\nstart after newlines', 'a  b   c    d',
  'tab\tseparated\tvalues', '\t\tdouble tab', 'mixed \t \n \r\n whitespace', '\u00a0non\u00a0breaking\u00a0space',
  'ideographic\u3000space', 'thin\u2009space and em\u2003space', 'line\u2028separator', 'para\u2029separator',
  'zero\u200bwidth\u200cjoiner\u200dhere', 'soft\u00adhyphen', 'mongolian\u180e\u180evowel separator',
  '\u180e', 'a \u180e b',
  // punctuation and symbols
  '!!!!!!', '???', '...', '…', ' (', '\n =', "' era", '--', '----------', '============', '~~~', '$$$',
  '@user #hashtag', 'a/b/c', 'C:\\Windows\\System32', 'http://example.com/path?q=1&r=2#frag',
  'email@example.org', '«quoted»', '“smart quotes”', '‘single’', '„German“', '¿Qué?', '¡Hola!',
  '£100 €200 ¥300 ₹400', '100% sure', '#1 priority', '[bracketed]', '{braces}', '<angle>', '(((nested)))',
  // digits
  '3', '33', '333', '3333', '33333', '333333', '3333333', '33333333', '333333333', '1234567890',
  '3.14159', '1,000,000', '1e10', '-42', '+7', '0x1F', '٣٤٥', '१२३', '①②③', 'Ⅻ', '½ ¼ ¾', '2²', 'x³',
  'ied 4 ½ months', 'version 1.2.3-beta+build.45', '2024-01-02T03:04:05Z', '+1 (555) 123-4567',
  // contractions and case
  "don't", "won't", "I'm", "you're", "they've", "we'll", "she'd", "it's", "DON'T", "I'M", "YOU'RE",
  "They'Ve", "We'LL", "'s", "'tis", "rock 'n' roll", "Hello, y'all! How are you 😁 ?",
  'ALL CAPS SENTENCE', 'camelCaseIdentifier', 'snake_case_identifier', 'SCREAMING_SNAKE', 'kebab-case-word',
  // accents and Latin
  'Führer', 'naïve café', 'résumé', 'Ångström', 'Ærø', 'Œuvre', 'Straße', 'İstanbul', 'ǅungla',
  'Cửa Việt', 'Tiếng Việt có dấu', 'ﬁ ligature', 'Ｆｕｌｌｗｉｄｔｈ', 'ｶﾀｶﾅ', 'e\u0301 decomposed',
  'cafe\u0301', 'n\u0303', 'a\u0308\u0304', 'A\u030a', 'Z\u0335\u0321a\u0336l\u0334g\u0338o',
  // Greek, Cyrillic
  'Ελληνικά γράμματα', 'ΣΊΣΥΦΟΣ', 'нещо на Български', 'Привет, мир!', 'Їжак і ґанок',
  // CJK
  '中文测试', '我想在apple工作1314151天～', '日本語のテキスト', 'カタカナとひらがな', '한국어 텍스트',
  '漢字かな交じり文', '「括弧」と、句読点。', '中文，標點！', '汉字漢字', '𠀀𠀁𠀂 extension B',
  // right-to-left and complex scripts
  'مرحبا بالعالم', 'العربية: ١٢٣', 'שלום עולם', 'עִבְרִית', 'ภาษาไทย', 'สวัสดีครับ', 'हिन्दी भाषा',
  'বাংলা', 'தமிழ்', 'ქართული', 'Հայերեն', 'ᐃᓄᒃᑎᑐᑦ', 'ខ្មែរ', 'ាន់តែពិសេសអាចខលចេញ', 'ᠮᠣᠩᠭᠣᠯ',
  // emoji
  '😀', '😀😃😄', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇺🇸🇯🇵', '❤️', '🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)',
  '1️⃣', '🧑🏿‍🚀', '🫶', 'text😀text', '😀 😀  😀',
  // code
  'def f(x):\n    return x**2\n', 'int main(void) { return 0; }', 'for (int i = 0; i < n; i++) {}',
  '{"key": "value", "n": 1}', '<html><body class="x">Hi</body></html>', 'SELECT * FROM t WHERE a = 1;',
  '    indented\n        more\n', 'x = [1, 2, 3]\ny = {"a": None}', '#include <stdio.h>', 'a->b', 'a=>b',
  '```python\nprint("hi")\n```', '$ ls -la | grep foo', "console.log('x');",
  // added and special tokens inside text
  '<s>', '</s>', '<unk>', '<s>Hello</s>', 'a<s>b', ' <s> ', '<s><s>', '<|begin_of_text|>Hello',
  'x<|eot_id|>y', '<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>', '<|eot_id', '<<|eot_id|>>',
  '<|im_start|>user\nhi<|im_end|>\n', '<|im_start|><|im_end|>', '<|endoftext|>', 'a<|endoftext|>b',
  '<tool_call>\n{"name": "f"}\n</tool_call>', '<think>\nreasoning\n</think>\n\nanswer', '<bos>text',
  '<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n', '<start_of_image>', '<pad><eos>',
  '<|reserved_special_token_5|>', '<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>', '<mask>', '[multimodal]',
  '<unused0> <unused1>', '<0x41>', '▁', '▁▁hello', 'a▁b',
  // byte fallback candidates
  '\u0001\u0002\u0003', '\u007f', '\u001b[31mred\u001b[0m', '\ufffd', '\uffff', '\u{10ffff}', '\u{e000}',
  '\u{1f}', '\u0000null byte', 'x\u0000y',
];

// Very long words and runs.
const long = [
  'a'.repeat(1000), 'ab'.repeat(700), '1'.repeat(500), ' '.repeat(300), '\n'.repeat(200),
  'antidisestablishmentarianism'.repeat(20), '漢'.repeat(300), '😀'.repeat(200), 'é'.repeat(400),
  'x'.repeat(2000) + ' y', 'https://example.com/' + 'segment/'.repeat(100),
  Array.from({ length: 300 }, (_, i) => String.fromCharCode(97 + (i * 7) % 26)).join(''),
  'aGVsbG8gd29ybGQ='.repeat(40), '\t'.repeat(100) + 'end', '!?'.repeat(250), '0123456789'.repeat(60),
];

// Deterministic combinations of fragments.
const fragments = [
  'the', ' quick', ' brown', 'fox', "'s", "n't", '  ', '\n', '\r\n', '\t', '123', '4567', '3.5', 'é',
  'e\u0301', '中文', 'テスト', '한', 'مرحبا', 'שלום', 'ไทย', '😀', '👨‍👩‍👧', '🇫🇷', '!', '?!', '...',
  '<s>', '</s>', '<|eot_id|>', '<|im_start|>', '<|im_end|>', '<end_of_turn>', '<tool_call>', '▁',
  'Hello', 'WORLD', 'snake_case', '(x)', '{"a":1}', '\u00a0', '\u3000', '  \n  ', 'ß', 'İ', 'Σ',
  'ﬁ', '½', '٣', 'x\u0000', '\u001b', 'naïve', '$100', '@', '#', 'www.', '.com', '://',
];

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

const combos = [];
const r = rng(12345);
for (let i = 0; i < 420; i++) {
  const k = 2 + Math.floor(r() * 6);
  let s = '';
  for (let j = 0; j < k; j++) {
    s += fragments[Math.floor(r() * fragments.length)];
    const sep = r();
    if (sep < 0.3) s += ' ';
    else if (sep < 0.35) s += '\n';
  }
  combos.push(s);
}

const whiteSpaceEdge = [
  'a\u0085\u0085b', 'x \ufeff\ufeffy', '\ufeffhello', 'a\u0085b', 'next\u0085line', ' \u0085 \u0085 ',
  'bom\ufeff \ufeff', '\ufeff', '\u0085', 'a \u0085\u0085 b', 'a  \ufeff', '\u0085\u0085\u0085x',
];

export const corpus = [...handwritten, ...long, ...combos, ...whiteSpaceEdge];
export const byteLevelRegexDiffers = new Set(whiteSpaceEdge);

// Texts with special tokens written into them: used to check that
// --plain-special tokenizes them as text (no special ids come out).
export const withSpecials = handwritten.filter((s) => /<\|?[a-z_]+\|?>|<s>|<\/s>|<bos>/.test(s));
