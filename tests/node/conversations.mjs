// Conversations for the chat-template comparison (template_compare.mjs).
// Each is {messages, add_generation_prompt?, tools?, ...extra variables}.

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather in a city.',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', description: 'City name, e.g. "Paris"' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['city'],
    },
  },
};
const searchTool = {
  type: 'function',
  function: {
    name: 'search',
    description: 'Search the web; returns the top results.',
    parameters: { type: 'object', properties: { query: { type: 'string' }, n: { type: 'integer', default: 3 } } },
  },
};

const u = (content) => ({ role: 'user', content });
const a = (content) => ({ role: 'assistant', content });
const s = (content) => ({ role: 'system', content });

const base = [
  { messages: [u('Hello!')] },
  { messages: [u('Hello!')], add_generation_prompt: true },
  { messages: [s('You are a helpful assistant.'), u('What is 2+2?')], add_generation_prompt: true },
  { messages: [s('You are terse.'), u('Hi'), a('Hello.'), u('Tell me a joke.')], add_generation_prompt: true },
  { messages: [u('One'), a('Two'), u('Three'), a('Four')] },
  { messages: [u('One'), a('Two'), u('Three'), a('Four')], add_generation_prompt: true },
  { messages: [u('  leading and trailing spaces  \n'), a('\n\nanswer with newlines\n\n')], add_generation_prompt: true },
  { messages: [u('Unicode: café, 中文, עברית, 😀👨‍👩‍👧, ½')], add_generation_prompt: true },
  { messages: [u('Quotes "double" and \'single\', backslash \\ and {{ braces }} and {% tags %}')], add_generation_prompt: true },
  { messages: [u('Line one\nLine two\r\nLine three\ttabbed')], add_generation_prompt: false },
  { messages: [u('')], add_generation_prompt: true },
  { messages: [s(''), u('empty system prompt')], add_generation_prompt: true },
  {
    messages: [
      s('Answer in French.'), u('Hi'), a('Bonjour !'), u('How are you?'), a('Très bien, merci.'), u('And the weather?'),
      a('Il fait beau.'), u('Thanks'), a('De rien.'), u('Bye'),
    ],
    add_generation_prompt: true,
  },
  { messages: [u('Write code:\n```python\nprint("hi")\n```')], add_generation_prompt: true },
  { messages: [u('<|eot_id|><|im_end|><end_of_turn> special strings in content')], add_generation_prompt: true },
  { messages: [u('Prefill'), a('The answer is')], add_generation_prompt: false },
  { messages: [s('System only')], add_generation_prompt: true },
  { messages: [u('a'.repeat(3000))], add_generation_prompt: true },
  { messages: [u('Multi\n\n\nblank lines\n\n')], add_generation_prompt: true },
  { messages: [u('What is <think>?'), a('<think>\nI should explain.\n</think>\n\nIt is a tag.'), u('Thanks')], add_generation_prompt: true },
  { messages: [s('sys'), u('q1'), a('a1'), u('q2')], add_generation_prompt: true, custom_variable: 'ignored' },
  { messages: [u('Hi')], add_generation_prompt: true, bos_token: '<custom-bos>' },
];

// Templates that support tools and thinking (Qwen3) get these as well.
const toolConvs = [
  { messages: [u('Weather in Paris?')], tools: [weatherTool], add_generation_prompt: true },
  { messages: [s('Be brief.'), u('Weather in Paris?')], tools: [weatherTool, searchTool], add_generation_prompt: true },
  {
    messages: [
      u('Weather in Paris?'),
      { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
      { role: 'tool', content: '{"temp": 21, "sky": "clear"}' },
    ],
    tools: [weatherTool],
    add_generation_prompt: true,
  },
  {
    messages: [
      u('Compare Paris and Rome.'),
      {
        role: 'assistant',
        content: 'Let me check both.',
        tool_calls: [
          { type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
          { type: 'function', function: { name: 'get_weather', arguments: { city: 'Rome', unit: 'celsius' } } },
        ],
      },
      { role: 'tool', content: '{"temp": 21}' },
      { role: 'tool', content: '{"temp": 25}' },
      a('Rome is warmer.'),
      u('Thanks!'),
    ],
    tools: [weatherTool],
    add_generation_prompt: true,
  },
  {
    messages: [u('Search for cats'), { role: 'assistant', content: '', tool_calls: [{ function: { name: 'search', arguments: { query: 'cats', n: 5 } } }] }, { role: 'tool', content: 'results: ...' }],
    tools: [searchTool],
    add_generation_prompt: false,
  },
  { messages: [u('Think step by step: 17*23?')], add_generation_prompt: true, enable_thinking: false },
  { messages: [u('Think step by step: 17*23?')], add_generation_prompt: true, enable_thinking: true },
  {
    messages: [u('q'), { role: 'assistant', content: 'final', reasoning_content: 'some reasoning' }, u('next')],
    add_generation_prompt: true,
  },
  {
    messages: [u('q'), { role: 'assistant', content: 'final', reasoning_content: 'some reasoning' }],
    add_generation_prompt: false,
  },
  { messages: [u('<tool_response>\nfake\n</tool_response>'), a('ok')], add_generation_prompt: true },
];

// Gemma-style content parts and role errors.
const gemmaConvs = [
  { messages: [{ role: 'user', content: [{ type: 'text', text: ' part one ' }, { type: 'image' }, { type: 'text', text: 'part two' }] }], add_generation_prompt: true },
  { messages: [{ role: 'system', content: [{ type: 'text', text: 'System as parts' }] }, u('hi')], add_generation_prompt: true },
  { messages: [u('one'), u('two')], add_generation_prompt: true }, // roles must alternate: an error
  { messages: [a('assistant first')], add_generation_prompt: true }, // an error too
];

export function conversationsFor(name) {
  if (name === 'qwen3') return [...base, ...toolConvs];
  if (name === 'gemma3') return [...base, ...gemmaConvs];
  return base;
}
