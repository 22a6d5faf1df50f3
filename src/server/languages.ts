// ISO 639 codes (as the OpenAI API takes them) for the languages Qwen3-ASR names in `support_languages`.
// Cantonese and Filipino have no 639-1 code: their 639-3 codes (yue, fil) are accepted, and tl for Filipino.
const CODES: Readonly<Record<string, string>> = {
  zh: 'Chinese',
  en: 'English',
  yue: 'Cantonese',
  ar: 'Arabic',
  de: 'German',
  fr: 'French',
  es: 'Spanish',
  pt: 'Portuguese',
  id: 'Indonesian',
  it: 'Italian',
  ko: 'Korean',
  ru: 'Russian',
  th: 'Thai',
  vi: 'Vietnamese',
  ja: 'Japanese',
  tr: 'Turkish',
  hi: 'Hindi',
  ms: 'Malay',
  nl: 'Dutch',
  sv: 'Swedish',
  da: 'Danish',
  fi: 'Finnish',
  pl: 'Polish',
  cs: 'Czech',
  fil: 'Filipino',
  tl: 'Filipino',
  fa: 'Persian',
  el: 'Greek',
  ro: 'Romanian',
  hu: 'Hungarian',
  mk: 'Macedonian',
};

/**
 * The language name for an OpenAI `language` field: an ISO code ('en', 'EN', 'en-US') maps to its name;
 * anything else is passed on as given (a name such as 'English' is accepted by the model as well, and an
 * unknown one fails there with UNSUPPORTED_LANGUAGE).
 */
export function languageName(value: string): string {
  const v = value.trim();
  const base = v.toLowerCase().split(/[-_]/)[0] ?? '';
  return CODES[base] ?? v;
}
