// Stream an audio file (WAV, MP3, FLAC, Ogg, WebM, ...) through the recogniser and print the text as it is decoded.
//   node examples/pipe.mjs speech.mp3 [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { transcriber } from 'rustasr';

const [file = 'speech.wav', model = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);

const asr = transcriber({ model });
asr.on('format', (f) => console.error(`[${f.format}, ${f.sampleRate} Hz, ${f.channels} channel(s)]`));
asr.on('language', (language) => console.error(`[language: ${language}]`));

await pipeline(
  createReadStream(file),
  asr,
  new Transform({
    writableObjectMode: true,
    transform(token, _encoding, done) {
      done(null, token.text);
    },
  }),
  process.stdout,
);
process.stdout.write('\n');
