// Decode a JPEG XL file with Squoosh's libjxl build (npm @jsquash/jxl, WebAssembly): a decoder
// independent of the imagecodecs wheel the worker encodes with, for tests/imaging/test_jxl.py.
// stdin: the .jxl bytes. stdout: {"width", "height", "rgba": base64 of 8-bit RGBA}.
import { readFileSync } from "node:fs";
import decode, { init } from "@jsquash/jxl/decode.js";

const wasm = readFileSync(new URL(import.meta.resolve("@jsquash/jxl/codec/dec/jxl_dec.wasm")));
await init(await WebAssembly.compile(wasm));
const input = readFileSync(0);
// A Buffer may be a view into a larger pooled ArrayBuffer: hand over exactly its bytes.
const image = await decode(input.buffer.slice(input.byteOffset, input.byteOffset + input.length));
process.stdout.write(
  JSON.stringify({
    width: image.width,
    height: image.height,
    rgba: Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length).toString("base64"),
  }),
);
