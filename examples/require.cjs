// CommonJS (require), e.g. in an Electron main process or an older code base.
//   node examples/require.cjs speech.wav [model: a directory or a Hugging Face id, default Qwen/Qwen3-ASR-0.6B]
const { transcribe } = require('rustasr');

const [file = 'speech.wav', model = 'Qwen/Qwen3-ASR-0.6B'] = process.argv.slice(2);

transcribe(file, { model }).then(
  (r) => console.log(r.text),
  (err) => {
    console.error(`${err.code}: ${err.message}`);
    process.exitCode = 1;
  },
);
