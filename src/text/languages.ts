// ISO 639 codes of the languages Qwen3-ASR names in its config's support_languages, so that `en`, `eng`,
// `EN` and `English` all select English. The model's own names stay the canonical spelling.

/** ISO 639-1 and 639-3 (and 639-2/B where it differs) codes -> the model's language name. */
const CODES: Readonly<Record<string, string>> = {
  zh: 'Chinese', zho: 'Chinese', chi: 'Chinese', cmn: 'Chinese',
  en: 'English', eng: 'English',
  yue: 'Cantonese',
  ar: 'Arabic', ara: 'Arabic',
  de: 'German', deu: 'German', ger: 'German',
  fr: 'French', fra: 'French', fre: 'French',
  es: 'Spanish', spa: 'Spanish',
  pt: 'Portuguese', por: 'Portuguese',
  id: 'Indonesian', ind: 'Indonesian',
  it: 'Italian', ita: 'Italian',
  ko: 'Korean', kor: 'Korean',
  ru: 'Russian', rus: 'Russian',
  th: 'Thai', tha: 'Thai',
  vi: 'Vietnamese', vie: 'Vietnamese',
  ja: 'Japanese', jpn: 'Japanese',
  tr: 'Turkish', tur: 'Turkish',
  hi: 'Hindi', hin: 'Hindi',
  ms: 'Malay', msa: 'Malay', may: 'Malay', zsm: 'Malay',
  nl: 'Dutch', nld: 'Dutch', dut: 'Dutch',
  sv: 'Swedish', swe: 'Swedish',
  da: 'Danish', dan: 'Danish',
  fi: 'Finnish', fin: 'Finnish',
  pl: 'Polish', pol: 'Polish',
  cs: 'Czech', ces: 'Czech', cze: 'Czech',
  fil: 'Filipino', tl: 'Filipino', tgl: 'Filipino',
  fa: 'Persian', fas: 'Persian', per: 'Persian',
  el: 'Greek', ell: 'Greek', gre: 'Greek',
  ro: 'Romanian', ron: 'Romanian', rum: 'Romanian',
  hu: 'Hungarian', hun: 'Hungarian',
  mk: 'Macedonian', mkd: 'Macedonian', mac: 'Macedonian',
};

/**
 * The language name an ISO 639-1/639-3 code (any case; a region subtag such as `en-US` is ignored, except
 * that `zh-HK` / `zh-yue` mean Cantonese) stands for, or undefined when `value` is not a known code.
 */
export function languageFromCode(value: string): string | undefined {
  const key = value.trim().toLowerCase().replace(/_/g, '-');
  if (key === 'zh-hk' || key === 'zh-yue') return 'Cantonese';
  return CODES[key] ?? CODES[key.split('-')[0]!];
}

/** The codes accepted for a language name (for messages and docs). */
export function codesOf(name: string): string[] {
  return Object.entries(CODES)
    .filter(([, n]) => n === name)
    .map(([c]) => c);
}
