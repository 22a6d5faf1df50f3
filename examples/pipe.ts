// Stream a WAV file through the recogniser and print the text as it is decoded.
//   npm run build && npx tsx examples/pipe.ts speech.wav /path/to/Qwen3-ASR-0.6B
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { transcriber, type Token } from 'rustasr';

const [file = 'speech.wav', modelDir = './Qwen3-ASR-0.6B'] = process.argv.slice(2);

const asr = transcriber({ model: modelDir, maxNewTokens: 512 });
asr.on('language', (language: string) => console.error(`[language: ${language}]`));

await pipeline(
  createReadStream(file),
  asr,
  new Transform({
    writableObjectMode: true,
    transform(token: Token, _encoding, done) {
      done(null, token.text);
    },
  }),
  process.stdout,
);
process.stdout.write('\n');
