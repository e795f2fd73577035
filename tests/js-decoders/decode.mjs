// Decode placeholders with the reference implementations, for tests/imaging/test_placeholder.py.
// stdin: {"thumbhash": base64, "blurhash": str, "width": w, "height": h}
// stdout: what the decoders make of them, as JSON.
import { thumbHashToRGBA, thumbHashToAverageRGBA, thumbHashToApproximateAspectRatio } from "thumbhash";
import { decode as blurhashDecode, isBlurhashValid } from "blurhash";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
const answer = {};
if (request.thumbhash) {
  const hash = Uint8Array.from(Buffer.from(request.thumbhash, "base64"));
  const image = thumbHashToRGBA(hash);
  answer.thumbhash = {
    aspect_ratio: thumbHashToApproximateAspectRatio(hash),
    average: thumbHashToAverageRGBA(hash),
    width: image.w,
    height: image.h,
    rgba: Buffer.from(image.rgba).toString("base64"),
  };
}
if (request.blurhash) {
  const valid = isBlurhashValid(request.blurhash);
  answer.blurhash = { valid: valid.result, error: valid.errorReason ?? null };
  if (valid.result) {
    const pixels = blurhashDecode(request.blurhash, request.width, request.height);
    answer.blurhash.rgba = Buffer.from(pixels).toString("base64");
  }
}
process.stdout.write(JSON.stringify(answer));
